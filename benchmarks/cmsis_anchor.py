"""The firmware benchmark's anchor: the same model, layer for layer, through Arm's CMSIS-NN.

``generate_cmsis`` prints C that runs a model's prepared graph (``tinypower.firmware_nn.
prepare``: the very parameters our kernels get) through CMSIS-NN's int8 functions, called as
TFLite Micro's CMSIS-NN kernels call them, with the same weights and the same arena plan
(``tinypower.codegen.plan_arena``), plus the one scratch buffer CMSIS-NN asks for (the largest
``*_get_buffer_size`` over the layers, which ``bench_setup`` returns).

CMSIS-NN itself is compiled from ``../shared/oracles/CMSIS-NN/`` (never copied into the
project). The C written here goes to a temporary folder, next to the benchmark's own.
"""

from __future__ import annotations

from pathlib import Path

from tinypower.codegen import ALIGNMENT, ArenaPlan, _c_values
from tinypower.firmware_nn import Int32Array, PreparedGraph, Struct, TensorArg

CMSIS_DIR = Path(__file__).resolve().parents[2] / "shared" / "oracles" / "CMSIS-NN"
SCRATCH_CAPACITY = 64 * 1024  # bytes; start-up fails loudly if a layer asks for more
# The integer sources (and their support code); float, int4, LSTM and SVDF are not needed.
_SKIP = ("f16", "f32", "flt", "_s4", "lstm", "svdf")


def cmsis_sources() -> list[Path]:
    return sorted(p for p in (CMSIS_DIR / "Source").glob("*/*.c")
                  if not any(s in p.name.lower() for s in _SKIP))


def _fields(struct: Struct) -> dict[str, object]:
    return dict(struct.fields)


class _Writer:
    def __init__(self, graph: PreparedGraph, plan: ArenaPlan) -> None:
        self.graph, self.plan = graph, plan
        self.constants: list[str] = []
        self.emitted: set[int] = set()
        self.arrays = 0

    def tensor(self, arg: TensorArg) -> str:
        t = self.graph.tensors[arg.index]
        if t.data is None:
            return f"(cm_arena + {self.plan.of(arg.index).offset})"
        name = f"cm_t{arg.index}"
        if arg.index not in self.emitted:
            self.emitted.add(arg.index)
            ctype = {"int8": "int8_t", "int32": "int32_t"}[t.dtype.name]
            self.constants.append(
                f"static const {ctype} {name}[{max(t.size, 1)}] "
                f"__attribute__((aligned({ALIGNMENT}))) = {{\n{_c_values(t.data)}\n}};")
        return name

    def int32s(self, values: tuple[int, ...]) -> str:
        self.arrays += 1
        name = f"cm_q{self.arrays}"
        body = ", ".join(str(int(v)) for v in values)
        self.constants.append(f"static const int32_t {name}[{len(values)}] = {{{body}}};")
        return f"(int32_t *){name}"

    def quant(self, requant: dict[str, object], channels: int) -> tuple[str, str]:
        """Per-channel multiplier and shift arrays (a per-tensor one repeated, as TFLM does)."""
        mult, shift = requant["multiplier"], requant["shift"]
        assert isinstance(mult, Int32Array) and isinstance(shift, Int32Array)
        m, s = mult.values, shift.values
        if len(m) == 1:
            m, s = m * channels, s * channels
        return self.int32s(m), self.int32s(s)


def _dims(shape: Struct) -> str:
    f = _fields(shape)
    return f"{{{f['n']}, {f['h']}, {f['w']}, {f['c']}}}"


def generate_cmsis(graph: PreparedGraph, plan: ArenaPlan, out_dir: Path) -> Path:
    """Write ``cm_model.c`` (bench_setup/bench_input/bench_output/bench_invoke) for the graph."""
    w = _Writer(graph, plan)
    setup: list[str] = []
    body: list[str] = []
    for op in graph.ops:
        a = op.args
        # The model's own weights and bias (our kernels may get them packed or folded).
        weights = TensorArg(op.reads[1]) if len(op.reads) > 1 else None
        bias = "NULL" if len(op.reads) < 3 else w.tensor(TensorArg(op.reads[2]))
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            p = _fields(a[0])
            q = _fields(p["out"])
            out_c = _fields(a[6])["c"]
            mult, shift = w.quant(q, out_c)
            tiles = (f".stride = {{{p['stride_w']}, {p['stride_h']}}}, "
                     f".padding = {{{p['pad_w']}, {p['pad_h']}}}, "
                     f".dilation = {{{p['dilation_w']}, {p['dilation_h']}}}, "
                     f".activation = {{{q['act_min']}, {q['act_max']}}}")
            offsets = f".input_offset = {p['input_offset']}, .output_offset = {q['output_offset']}"
            fs = _fields(a[3])
            if op.name == "CONV_2D":
                ptype, fn = "cmsis_nn_conv_params", "arm_convolve_wrapper_s8"
                params = f"{{{offsets}, {tiles}}}"
                fdims = _dims(a[3])
            else:
                ptype, fn = "cmsis_nn_dw_conv_params", "arm_depthwise_conv_wrapper_s8"
                params = f"{{{offsets}, .ch_mult = {p['depth_multiplier']}, {tiles}}}"
                fdims = f"{{1, {fs['h']}, {fs['w']}, {out_c}}}"
            decl = (f"    static const {ptype} p{op.index} = {params};\n"
                    f"    static const cmsis_nn_dims i{op.index} = {_dims(a[1])}, "
                    f"f{op.index} = {fdims}, b{op.index} = {{1, 1, 1, {out_c}}}, "
                    f"o{op.index} = {_dims(a[6])};\n")
            setup.append(decl + f"    need({fn}_get_buffer_size(&p{op.index}, &i{op.index}, "
                         f"&f{op.index}, &o{op.index}));")
            body.append(decl + f"    static const cmsis_nn_per_channel_quant_params "
                        f"q{op.index} = {{{mult}, {shift}}};\n"
                        f"    {fn}(&ctx, &p{op.index}, &q{op.index}, &i{op.index}, "
                        f"{w.tensor(a[2])}, &f{op.index}, {w.tensor(weights)}, &b{op.index}, "
                        f"{bias}, &o{op.index}, {w.tensor(a[7])});")
        elif op.name == "FULLY_CONNECTED":
            p = _fields(a[0])
            q = _fields(p["out"])
            batches, depth, outs = a[1], a[2], a[3]
            decl = (f"    static const cmsis_nn_fc_params p{op.index} = {{{p['input_offset']}, "
                    f"{p['filter_offset']}, {q['output_offset']}, "
                    f"{{{q['act_min']}, {q['act_max']}}}}};\n"
                    f"    static const cmsis_nn_dims i{op.index} = {{{batches}, 1, 1, {depth}}}, "
                    f"f{op.index} = {{{depth}, 1, 1, {outs}}}, b{op.index} = {{1, 1, 1, {outs}}}, "
                    f"o{op.index} = {{{batches}, 1, 1, {outs}}};\n")
            args = (f"&i{op.index}, {w.tensor(a[4])}, &f{op.index}, {w.tensor(weights)}, "
                    f"&b{op.index}, {bias}, &o{op.index}, {w.tensor(a[7])}")
            mult, shift = q["multiplier"], q["shift"]
            assert isinstance(mult, Int32Array) and isinstance(shift, Int32Array)
            if q["per_channel"]:
                m, s = w.quant(q, outs)
                body.append(decl + f"    static const cmsis_nn_per_channel_quant_params "
                            f"q{op.index} = {{{m}, {s}}};\n"
                            f"    arm_fully_connected_per_channel_s8(&ctx, &p{op.index}, "
                            f"&q{op.index}, {args});")
            else:
                body.append(decl + f"    static const cmsis_nn_per_tensor_quant_params "
                            f"q{op.index} = {{{mult.values[0]}, {shift.values[0]}}};\n"
                            f"    arm_fully_connected_s8(&ctx, &p{op.index}, &q{op.index}, "
                            f"{args});")
            setup.append(decl + f"    need(arm_fully_connected_s8_get_buffer_size(&f{op.index}));")
        elif op.kernel == "tp_average_pool2d_s8":
            p = _fields(a[0])
            o = _fields(a[3])
            decl = (f"    static const cmsis_nn_pool_params p{op.index} = {{"
                    f"{{{p['stride_w']}, {p['stride_h']}}}, {{{p['pad_w']}, {p['pad_h']}}}, "
                    f"{{{p['act_min']}, {p['act_max']}}}}};\n"
                    f"    static const cmsis_nn_dims i{op.index} = {_dims(a[1])}, "
                    f"f{op.index} = {{1, {p['filter_h']}, {p['filter_w']}, 1}}, "
                    f"o{op.index} = {_dims(a[3])};\n")
            setup.append(f"    need(arm_avgpool_s8_get_buffer_size({o['w']}, {o['c']}));")
            body.append(decl + f"    arm_avgpool_s8(&ctx, &p{op.index}, &i{op.index}, "
                        f"{w.tensor(a[2])}, &f{op.index}, &o{op.index}, {w.tensor(a[4])});")
        elif op.kernel == "tp_add_s8":
            p = _fields(a[0])
            body.append(
                f"    arm_elementwise_add_s8({w.tensor(a[2])}, {w.tensor(a[3])}, "
                f"{p['input1_offset']}, {p['input1_multiplier']}, {p['input1_shift']}, "
                f"{p['input2_offset']}, {p['input2_multiplier']}, {p['input2_shift']}, "
                f"{p['left_shift']}, {w.tensor(a[4])}, {p['output_offset']}, "
                f"{p['output_multiplier']}, {p['output_shift']}, {p['act_min']}, "
                f"{p['act_max']}, {a[1]});")
        elif op.kernel == "tp_softmax_s8":
            p = _fields(a[0])
            body.append(f"    arm_softmax_s8({w.tensor(a[3])}, {a[1]}, {a[2]}, "
                        f"{p['input_multiplier']}, {p['input_left_shift']}, {p['diff_min']}, "
                        f"{w.tensor(a[4])});")
        elif op.kernel == "tp_reshape":
            body.append(f"    __builtin_memcpy({w.tensor(a[1])}, {w.tensor(a[0])}, {a[2]});")
        else:
            raise ValueError(f"operator {op.index} ({op.name}, {op.kernel}) has no CMSIS-NN "
                             "counterpart in the benchmark's anchor")
        body[-1] = f"  {{\n{body[-1]}\n  }}\n    TP_PROFILE_OP({op.index});"
    x, y = graph.inputs[0], graph.outputs[0]
    source = f"""\
/* cm_model.c: generated by benchmarks/cmsis_anchor.py; the model through CMSIS-NN. */
#include <stdint.h>
#include <stddef.h>
#include "arm_nnfunctions.h"
#include "bench_model.h"
#include "bench_profile.h"

static int8_t cm_arena[{plan.size}] __attribute__((aligned({ALIGNMENT})));
static int8_t cm_scratch[{SCRATCH_CAPACITY}] __attribute__((aligned({ALIGNMENT})));
int32_t cm_scratch_bytes;

{chr(10).join(w.constants)}

static void need(int32_t bytes) /* start-up: the largest scratch any layer asks for */
{{
    if (bytes > cm_scratch_bytes) {{
        cm_scratch_bytes = bytes;
    }}
}}

uint32_t bench_setup(void)
{{
{chr(10).join("  {{" + chr(10) + s + chr(10) + "  }}" for s in setup)}
    return (uint32_t)cm_scratch_bytes;
}}

int8_t *bench_input(void) {{ return cm_arena + {plan.of(x).offset}; }}
const int8_t *bench_output(void) {{ return cm_arena + {plan.of(y).offset}; }}

void bench_invoke(void)
{{
    const cmsis_nn_context ctx = {{cm_scratch, {SCRATCH_CAPACITY}}};
{chr(10).join(body)}
}}
"""
    path = Path(out_dir) / "cm_model.c"
    path.write_text(source, encoding="utf-8")
    return path
