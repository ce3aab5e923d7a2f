"""``results.txt`` in the published runners' wording, so their regexes read our runs too.

Energy and performance lines follow the EEMBC runner (``Energy data for window``, ``Median
energy cost is X uJ/inf.``, ``Median throughput is X inf./sec.``, 3 decimals), which every
published-log parser already handles. A header says how the numbers were measured.
"""

from __future__ import annotations

from tinypower.rules.tiny import TinyResult

INVALID_WINDOW = "e-[The run must take at least 10 seconds and 10 iterations to be valid]"


def results_text(result: TinyResult, measured_as: str) -> str:
    lines = [f"# tinypower {result.mode} result, measured_as: {measured_as}"]
    if result.mode == "energy":
        for i, w in enumerate(result.windows):
            lines += [
                f"Energy data for window {i + 1} at time {w['start_s']:.2f} for "
                f"{w['duration_s']:.2f} sec.:",
                f"  Energy       : {w['energy_uj']:12.3f} uJ",
                f"  Power        : {w['mean_power_uw']:12.3f} uW",
                f"  Energy/Inf.  : {w['energy_per_inference_uj']:12.3f} uJ/inf.",
            ]
        lines.append(f"Median energy cost is {result.value:.3f} uJ/inf.")
    elif result.mode == "performance":
        for i, w in enumerate(result.windows):
            lines += [
                f"Performance results for window {i + 1}:",
                f"  # Inferences : {w['inferences']:12d}",
                f"  Runtime      : {w['elapsed_s']:12.3f} sec.",
                f"  Throughput   : {w['throughput_inf_per_s']:12.3f} inf./sec.",
                "Runtime requirements have been met." if w["elapsed_s"] >= 10 else INVALID_WINDOW,
            ]
        lines.append(f"Median throughput is {result.value:.3f} inf./sec.")
    else:
        if result.metric == "top1":
            lines.append(f"Top-1: {result.value:.1f}%")
        elif result.metric == "auc":
            lines.append(f"AUC: {result.value:.3f}")
        agreement = result.extras.get("reference_agreement_percent")
        if agreement is not None:
            lines.append(f"Reference agreement: {agreement:.1f}%")
    for check in result.checks:
        if not check.passed:
            lines.append(f"{check.severity.upper()}: {check.rule}: {check.message}")
    lines.append("VALID" if result.valid else "ERROR: Not valid for submission")
    return "\n".join(lines) + "\n"
