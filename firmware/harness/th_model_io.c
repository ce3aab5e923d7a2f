/*
 * th_model_io: wire bytes -> model input and model output -> results text, per suite,
 * computing exactly what the host reference computes (host/suites/benchmarks.py:
 * Suite.to_tensor and dut_outputs), so the printed text can be compared byte for byte.
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
static int8_t g_input_copy[TP_MODEL_INPUT_BYTES]; /* the arena may reuse the input */
static double g_error[TP_MODEL_OUTPUT_BYTES];
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
    /* numpy: clip(round(float64(x) / float64(scale)) + zero_point, -128, 127) */
    const double scale = (double)tp_model_input_scale;
    for (size_t i = 0; i < TP_MODEL_INPUT_BYTES; i++) {
        float x;
        memcpy(&x, wire + 4 * i, sizeof x); /* little endian, as the wire */
        double q = th_round_half_even((double)x / scale) + (double)tp_model_input_zero_point;
        in[i] = (int8_t)(q < -128.0 ? -128 : (q > 127.0 ? 127 : (int)q));
    }
    memcpy(g_input_copy, in, TP_MODEL_INPUT_BYTES);
#endif
}

void th_infer(void) {
    tp_model_invoke();
}

void th_results(th_put_fn put) {
    char text[TH_FIXED3_MAX];
    const int8_t *out = tp_model_output();
#if TH_WIRE_TYPE == TH_WIRE_FLOAT32
    const double in_scale = (double)tp_model_input_scale;
    const double out_scale = (double)tp_model_output_scale;
    for (size_t i = 0; i < TP_MODEL_OUTPUT_BYTES; i++) {
        double x = (double)(g_input_copy[i] - tp_model_input_zero_point) * in_scale;
        double y = (double)(out[i] - tp_model_output_zero_point) * out_scale;
        double d = x - y;
        g_error[i] = d * d;
    }
    put(text, th_format_fixed3(text, th_numpy_mean(g_error, TP_MODEL_OUTPUT_BYTES)));
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
