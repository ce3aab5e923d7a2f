/*
 * tp_nn: int8 inference kernels for the tinypower benchmark firmware.
 *
 * Each function computes one TFLite builtin operator with TFLite's int8 reference arithmetic,
 * so a model run op by op through these kernels gives outputs bit-identical to TFLite Micro.
 * The code is our own, written from the public definition of that arithmetic (per-channel
 * quantised weights, int32 bias, fixed-point requantisation with TFLite's rounding).
 *
 * Everything TFLite computes in an operator's Prepare step with floating point (Q31
 * multipliers and shifts, activation clamps, softmax scaling) is computed by the caller
 * (on the host, by codegen) and passed in the parameter structs; the kernels themselves use
 * integer arithmetic only, except QUANTIZE/DEQUANTIZE whose float side TFLite defines in float.
 *
 * Layouts are TFLite's: activations NHWC, CONV_2D filters OHWI, DEPTHWISE_CONV_2D filters
 * 1 x H x W x (C * depth_multiplier), FULLY_CONNECTED weights [output_depth, accum_depth].
 * Freestanding C99: no allocation, no libc (only <stdint.h> and <stddef.h>).
 */
#ifndef TP_NN_H
#define TP_NN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A 4-D shape, NHWC for activations; see the layouts above for filters. */
typedef struct {
    int32_t n, h, w, c;
} tp_shape4_t;

/*
 * Requantisation of an int32 accumulator to int8, TFLite's output stage:
 *   out = clamp(MultiplyByQuantizedMultiplier(acc, multiplier, shift) + output_offset,
 *               act_min, act_max)
 * multiplier/shift come from QuantizeMultiplier(input_scale * filter_scale / output_scale).
 */
typedef struct {
    const int32_t *multiplier; /* Q31 significands, one per output channel or a single one */
    const int32_t *shift;      /* exponents: > 0 shifts left first, < 0 rounds right after */
    int32_t per_channel;       /* nonzero: index both arrays by output channel; zero: use [0] */
    int32_t output_offset;     /* the output zero point */
    int32_t act_min, act_max;  /* fused activation clamp (CalculateActivationRangeQuantized) */
    int32_t shifts_left;       /* nonzero when some shift is > 0 (lets the fast kernels skip
                                  the left shift; the reference kernels ignore it) */
} tp_requant_t;

/* CONV_2D and DEPTHWISE_CONV_2D. */
typedef struct {
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_h, pad_w;      /* top/left padding, TFLite's ComputePaddingHeightWidth */
    int32_t depth_multiplier;  /* DEPTHWISE_CONV_2D only; ignored by tp_conv2d_s8 */
    int32_t input_offset;      /* minus the input zero point */
    tp_requant_t out;
} tp_conv_params_t;

/* CONV_2D, int8 activations, per-channel int8 filters [out_c, k_h, k_w, in_c / groups]. */
void tp_conv2d_s8(const tp_conv_params_t *p, const tp_shape4_t *in_shape, const int8_t *in,
                  const tp_shape4_t *filter_shape, const int8_t *filter, const int32_t *bias,
                  const tp_shape4_t *out_shape, int8_t *out);

/* DEPTHWISE_CONV_2D; output channel = in_channel * depth_multiplier + m. bias may be NULL. */
void tp_depthwise_conv2d_s8(const tp_conv_params_t *p, const tp_shape4_t *in_shape,
                            const int8_t *in, const tp_shape4_t *filter_shape,
                            const int8_t *filter, const int32_t *bias,
                            const tp_shape4_t *out_shape, int8_t *out);

/*
 * The fast kernels (tp_nn_fast.c), same results. CONV_2D without groups: filter packed by the
 * host (tinypower.firmware_nn.pack_weights: per pair of output channels, 4 bytes of each in
 * turn, depth and channels zero-padded to multiples of 4), bias folded with the input offset
 * (bias + input_offset * sum of the channel's weights, as many as the packed channels),
 * word-aligned scratch of 16 bytes per step of 4 along k_h * k_w * in_c (two rows widened to
 * int16), plus 8 per step for two im2col rows unless the convolution is 1x1 unpadded.
 */
void tp_conv2d_gemm_s8(const tp_conv_params_t *p, const tp_shape4_t *in_shape,
                       const int8_t *in, const tp_shape4_t *filter_shape,
                       const int8_t *packed_filter, const int32_t *folded_bias,
                       const tp_shape4_t *out_shape, int8_t *out, int8_t *scratch);

/* DEPTHWISE_CONV_2D with depth multiplier 1 and no dilation; filter packed by the host
 * (tinypower.firmware_nn.pack_depthwise: int16, per group of 4 channels, each tap's 4
 * weights in the order 0, 2, 1, 3). */
void tp_depthwise_conv2d_dm1_s8(const tp_conv_params_t *p, const tp_shape4_t *in_shape,
                                const int8_t *in, const tp_shape4_t *filter_shape,
                                const int16_t *filter, const int32_t *bias,
                                const tp_shape4_t *out_shape, int8_t *out);

/* FULLY_CONNECTED. */
typedef struct {
    int32_t input_offset;   /* minus the input zero point */
    int32_t filter_offset;  /* minus the weights zero point (0 for symmetric weights) */
    tp_requant_t out;       /* per_channel = 0 for per-tensor weights */
} tp_fc_params_t;

/* out[b][o] = requant(sum_d (w[o][d] + filter_offset) * (in[b][d] + input_offset) + bias[o]) */
void tp_fully_connected_s8(const tp_fc_params_t *p, int32_t batches, int32_t accum_depth,
                           int32_t output_depth, const int8_t *in, const int8_t *filter,
                           const int32_t *bias, int8_t *out);

/* FULLY_CONNECTED with symmetric weights (filter_offset 0), packed and folded as
 * tp_conv2d_gemm_s8's; word-aligned scratch of 8 bytes per step of 4 inputs per row, for
 * min(batches, 2) rows. */
void tp_fully_connected_gemm_s8(const tp_fc_params_t *p, int32_t batches, int32_t accum_depth,
                                int32_t output_depth, const int8_t *in,
                                const int8_t *packed_filter, const int32_t *folded_bias,
                                int8_t *out, int8_t *scratch);

/* AVERAGE_POOL_2D (input and output share scale and zero point, as TFLite requires). */
typedef struct {
    int32_t stride_h, stride_w;
    int32_t filter_h, filter_w;
    int32_t pad_h, pad_w;
    int32_t act_min, act_max;
} tp_pool_params_t;

void tp_average_pool2d_s8(const tp_pool_params_t *p, const tp_shape4_t *in_shape,
                          const int8_t *in, const tp_shape4_t *out_shape, int8_t *out);

/* ADD: both inputs rescaled to a common scale with 20 bits of headroom, summed, rescaled. */
typedef struct {
    int32_t input1_offset, input2_offset; /* minus the input zero points */
    int32_t output_offset;                /* the output zero point */
    int32_t left_shift;                   /* 20 for int8 */
    int32_t input1_multiplier, input1_shift;
    int32_t input2_multiplier, input2_shift;
    int32_t output_multiplier, output_shift;
    int32_t act_min, act_max;
} tp_add_params_t;

/* ADD of two tensors of the same shape, `size` elements. */
void tp_add_s8(const tp_add_params_t *p, size_t size, const int8_t *in1, const int8_t *in2,
               int8_t *out);

#define TP_MAX_DIMS 6

/* Broadcasting: the output's dims and each input's element strides (0 on broadcast dims). */
typedef struct {
    int32_t ndim; /* 1 .. TP_MAX_DIMS */
    int32_t dims[TP_MAX_DIMS];
    int32_t stride1[TP_MAX_DIMS];
    int32_t stride2[TP_MAX_DIMS];
} tp_broadcast_t;

/* ADD with numpy-style broadcasting of either input. */
void tp_add_broadcast_s8(const tp_add_params_t *p, const tp_broadcast_t *b, const int8_t *in1,
                         const int8_t *in2, int8_t *out);

/* SOFTMAX, int8 in, int8 out (output scale 1/256, zero point -128). */
typedef struct {
    int32_t input_multiplier;  /* PreprocessSoftmaxScaling(beta, input_scale, 5) */
    int32_t input_left_shift;
    int32_t diff_min;          /* -CalculateInputRadius(5, input_left_shift) */
} tp_softmax_params_t;

/* Softmax over the last axis: `outer_size` rows of `depth` values. */
void tp_softmax_s8(const tp_softmax_params_t *p, int32_t outer_size, int32_t depth,
                   const int8_t *in, int8_t *out);

/* RESHAPE: the data do not change; copies `bytes` (in and out may be the same buffer). */
void tp_reshape(const void *in, void *out, size_t bytes);

/* QUANTIZE int8 -> int8: requantise with QuantizeMultiplier(input_scale / output_scale). */
void tp_requantize_s8(int32_t input_zero_point, int32_t multiplier, int32_t shift,
                      int32_t output_zero_point, size_t size, const int8_t *in, int8_t *out);

/* QUANTIZE float32 -> int8: round(x / scale) + zero_point, saturated. */
void tp_quantize_f32_s8(float scale, int32_t zero_point, size_t size, const float *in,
                        int8_t *out);

/* DEQUANTIZE int8 -> float32: scale * (x - zero_point). */
void tp_dequantize_s8_f32(float scale, int32_t zero_point, size_t size, const int8_t *in,
                          float *out);

#ifdef __cplusplus
}
#endif

#endif /* TP_NN_H */
