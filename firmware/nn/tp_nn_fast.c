/*
 * tp_nn_fast.c: external definitions of the kernels in tp_nn_fast.h (declared in tp_nn.h),
 * for callers that do not specialise them: the host's ctypes runner, and any code that links
 * the library without the generated model.
 */
#include "tp_nn_fast.h"

void tp_conv2d_gemm_s8(const tp_conv_params_t *p, const tp_shape4_t *in_shape,
                       const int8_t *in, const tp_shape4_t *filter_shape,
                       const int8_t *packed_filter, const int32_t *folded_bias,
                       const tp_shape4_t *out_shape, int8_t *out, int8_t *scratch)
{
    tp_conv2d_gemm_s8_inline(p, in_shape, in, filter_shape, packed_filter, folded_bias,
                             out_shape, out, scratch);
}

void tp_fully_connected_gemm_s8(const tp_fc_params_t *p, int32_t batches, int32_t accum_depth,
                                int32_t output_depth, const int8_t *in,
                                const int8_t *packed_filter, const int32_t *folded_bias,
                                int8_t *out, int8_t *scratch)
{
    tp_fully_connected_gemm_s8_inline(p, batches, accum_depth, output_depth, in, packed_filter,
                                      folded_bias, out, scratch);
}

void tp_depthwise_conv2d_dm1_s8(const tp_conv_params_t *p, const tp_shape4_t *in_shape,
                                const int8_t *in, const tp_shape4_t *filter_shape,
                                const int16_t *filter, const int32_t *bias,
                                const tp_shape4_t *out_shape, int8_t *out)
{
    tp_depthwise_conv2d_dm1_s8_inline(p, in_shape, in, filter_shape, filter, bias, out_shape,
                                      out);
}
