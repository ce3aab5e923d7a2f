/*
 * th_model_io: wire bytes -> model input and model output -> results text, per suite,
 * computing exactly what the host reference computes (host/suites/benchmarks.py:
 * Suite.to_tensor and dut_outputs), so the printed text can be compared byte for byte.
 *
 * ad01 follows the MLPerf Tiny reference firmware (reference_submissions/anomaly_detection/
 * submitter_implemented.cpp): the input is quantised as its QuantizeFloatToInt8 does
 * (round(value / scale) + zero_point, the division in float, C round: ties away from zero),
 * and the score is its calculate_result: the mean squared error between each dequantised
 * output and the ORIGINAL float input, in float, summed in order. Built with -std=c99, so GCC
 * contracts no a*b+c into a fused multiply-add (-ffp-contract=off in ISO C modes) and every
 * float operation rounds as the reference's does. tests/conformance/test_ad01_reference.py
 * compares both with the reference source compiled by the host's gcc.
 */
#include "th_model_io.h"

#include <string.h>

#include "th_format.h"
#include "th_suite.h"
#include "tp_model.h"

_Static_assert(TP_MODEL_INPUT_BYTES == TH_TENSOR_BYTES,
               "the model's input size does not match the suite's input (th_suite.h)");

#if TH_WIRE_TYPE == TH_WIRE_FLOAT32
_Static_assert(TP_MODEL_OUTPUT_BYTES == TP_MODEL_INPUT_BYTES,
               "ad01 compares input and output: the model must reproduce its input");
static float g_input_float[TP_MODEL_INPUT_BYTES]; /* the input as received (the reference's) */

/* C round(q) for a float, ties away from zero, without libm: the fraction a - trunc(a) is
 * exact in float, so no rounding happens before the comparison. |q| is capped at 1024 (any
 * larger value clamps to the int8 range anyway); NaN becomes 0. */
static int32_t th_round_away(float q) {
    float a = q < 0.0f ? -q : q;
    if (!(a <= 1024.0f)) {
        a = (a != a) ? 0.0f : 1024.0f;
    }
    int32_t n = (int32_t)a;
    if (a - (float)n >= 0.5f) {
        n += 1;
    }
    return q < 0.0f ? -n : n;
}
#endif

void th_load_tensor(const uint8_t *wire) {
    int8_t *in = tp_model_input();
#if TH_WIRE_TYPE == TH_WIRE_INT8
    memcpy(in, wire, TP_MODEL_INPUT_BYTES);
#elif TH_WIRE_TYPE == TH_WIRE_UINT8
    for (size_t i = 0; i < TP_MODEL_INPUT_BYTES; i++) {
        in[i] = (int8_t)((int)wire[i] - 128);
    }
#else
    /* the reference's QuantizeFloatToInt8: round(value / scale) + zero_point, clamped */
    for (size_t i = 0; i < TP_MODEL_INPUT_BYTES; i++) {
        float x;
        memcpy(&x, wire + 4 * i, sizeof x); /* little endian, as the wire */
        g_input_float[i] = x;
        int32_t q = th_round_away(x / tp_model_input_scale) + tp_model_input_zero_point;
        in[i] = (int8_t)(q < -128 ? -128 : (q > 127 ? 127 : q));
    }
#endif
}

void th_infer(void) {
    tp_model_invoke();
}

void th_results(th_put_fn put) {
    char text[TH_FIXED3_MAX];
    const int8_t *out = tp_model_output();
#if TH_WIRE_TYPE == TH_WIRE_FLOAT32
    /* the reference's calculate_result, in float */
    float diffsum = 0.0f;
    for (size_t i = 0; i < TP_MODEL_OUTPUT_BYTES; i++) {
        float converted = (float)(out[i] - tp_model_output_zero_point) * tp_model_output_scale;
        float diff = converted - g_input_float[i];
        diffsum += diff * diff;
    }
    diffsum /= (float)TP_MODEL_OUTPUT_BYTES;
    put(text, th_format_fixed3(text, (double)diffsum));
#else
    for (size_t i = 0; i < TP_MODEL_OUTPUT_BYTES; i++) {
        if (i) {
            put(",", 1);
        }
        put(text, th_format_dequant3(text, out[i], tp_model_output_zero_point,
                                     tp_model_output_scale));
    }
#endif
}
