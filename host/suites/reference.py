"""Host reference inference with the tflite-micro interpreter (the same kernels as TFLM firmware).

The software DUT runs its model through this class, and accuracy mode compares every DUT reply
with it: "reference agreement" is the share of DUT outputs printed identically to the host's.
"""

from __future__ import annotations

import numpy as np

from tinypower.suites.benchmarks import Suite, dut_outputs, format_results


class ReferenceModel:
    """One model loaded in the tflite-micro interpreter, fed wire bytes as the DUT receives them."""

    def __init__(self, model: bytes, suite: Suite) -> None:
        from tflite_micro import runtime  # imported here: loading the runtime takes ~0.3 s

        self.suite = suite
        try:
            self._interpreter = runtime.Interpreter.from_bytes(model)
        except Exception as exc:  # the runtime raises bare RuntimeError/ValueError on bad models
            raise ValueError(
                f"tflite-micro could not load the model ({exc}); pass a valid int8 .tflite file"
            ) from exc
        inp = self._interpreter.get_input_details(0)
        out = self._interpreter.get_output_details(0)
        self.input_shape = tuple(int(d) for d in inp["shape"])
        self.input_q = _quant(inp)
        self.output_q = _quant(out)

    def infer(self, wire: bytes) -> np.ndarray:
        """The values the DUT prints for this input (dequantised outputs, or AD's error)."""
        tensor = self.suite.to_tensor(wire, *self.input_q)
        if tensor.size != int(np.prod(self.input_shape)):
            raise ValueError(
                f"the model takes {int(np.prod(self.input_shape))} inputs but a {self.suite.name} "
                f"input has {tensor.size}: the model does not fit the suite"
            )
        self._interpreter.set_input(tensor.reshape(self.input_shape), 0)
        self._interpreter.invoke()
        output = self._interpreter.get_output(0)
        return dut_outputs(self.suite, wire, output, self.output_q)

    def results_payload(self, wire: bytes) -> str:
        """The ``m-results-[...]`` payload the reference firmware would print for this input."""
        return format_results(self.infer(wire))


def _quant(details: dict) -> tuple[float, int]:
    params = details["quantization_parameters"]
    scales, zero_points = params["scales"], params["zero_points"]
    scale = float(scales[0]) if len(scales) else 1.0
    return scale, int(zero_points[0]) if len(zero_points) else 0
