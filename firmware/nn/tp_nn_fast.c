/*
 * tp_nn_fast: the kernels the generated models run for their heavy layers, with the same
 * results as tp_nn.c's reference ones (bit for bit; tests/test_nn_kernels.py checks both
 * against tflite-micro), organised for speed:
 *
 * - CONV_2D and FULLY_CONNECTED are one int8 matrix product (gemm_s8): two input rows
 *   (pixels) against two output channels at a time, four inputs per step. The weights come
 *   pre-arranged by the host (tinypower.firmware_nn.pack_weights): for each pair of output
 *   channels, 4 bytes of the first then 4 of the second, the depth zero-padded to a multiple
 *   of 4, so one step is one aligned 8-byte read. The input offset is folded into the bias on
 *   the host, bias' = bias + input_offset * sum(weights), so the loop multiplies raw int8.
 *   A 1x1 unpadded convolution reads its input rows in place; any other shape first copies
 *   two pixels' receptive fields into a scratch buffer (im2col), with padding written as the
 *   input zero point, whose product with the folded bias is exactly TFLite's "padding adds
 *   nothing".
 * - DEPTHWISE_CONV_2D (depth multiplier 1, no dilation; tp_nn.c dispatches here) walks only
 *   the taps inside the image, found once per output pixel, so the tap loop has no bounds
 *   checks; four channels per step.
 *
 * On cores with the DSP extension (Cortex-M4/M7/M33: the compiler defines __ARM_FEATURE_DSP
 * from the board's -mcpu) a step is SXTB16 (two int8 lanes widened to int16) and SMLAD (two
 * 16 x 16 products added to an accumulator), 16 MACs in 20 instructions for the matrix
 * product. Elsewhere (Cortex-M0+, the host) the same loops run one byte at a time. Defining
 * TP_NN_EMULATE_DSP builds the DSP path with C models of those instructions, so the host can
 * check that path's data flow too. Integer sums are exact, so the order of accumulation does
 * not change a result.
 */
#include "tp_nn.h"

#if (defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP) || defined(TP_NN_EMULATE_DSP)
#define TP_DSP 1
#else
#define TP_DSP 0
#endif

/* ---- requantisation ------------------------------------------------------------------ */

/*
 * TFLite's MultiplyByQuantizedMultiplier with a non-negative Q31 multiplier (as
 * QuantizeMultiplier gives: never INT32_MIN, so SaturatingRoundingDoublingHighMul never
 * saturates). Its nudge-then-truncate is floor((a * b + 2^30) / 2^31) for both signs, taken
 * here as bits 31..62 of the 64-bit sum (a logical shift: the bits kept are the same). The
 * rounding right shift is gemmlowp's RoundingDivideByPOT, as in tp_nn.c.
 */
static inline int32_t mbqm_fast(int32_t x, int32_t multiplier, int32_t shift)
{
    int64_t ab;
    int32_t h;
    if (shift > 0) {
        x = (int32_t)((uint32_t)x << shift);
    }
    ab = (int64_t)x * (int64_t)multiplier + ((int64_t)1 << 30);
    h = (int32_t)(uint32_t)((uint64_t)ab >> 31);
    if (shift < 0) {
        const int32_t e = -shift;
        const int32_t mask = (int32_t)((1u << e) - 1u);
        const int32_t threshold = (mask >> 1) + (h < 0 ? 1 : 0);
        const int32_t remainder = h & mask;
        h = (h >= 0 ? (h >> e) : ~(~h >> e)) + (remainder > threshold ? 1 : 0);
    }
    return h;
}

static inline int8_t requant_fast(const tp_requant_t *q, int32_t channel, int32_t acc)
{
    const int32_t i = q->per_channel ? channel : 0;
    int32_t v = mbqm_fast(acc, q->multiplier[i], q->shift[i]) + q->output_offset;
    v = v < q->act_min ? q->act_min : v;
    return (int8_t)(v > q->act_max ? q->act_max : v);
}

/* ---- DSP instructions ---------------------------------------------------------------- */

#if TP_DSP

static inline uint32_t load32(const int8_t *p)
{
    uint32_t v;
    __builtin_memcpy(&v, p, 4); /* one LDR: the M4/M7/M33 allow unaligned word loads */
    return v;
}

#if defined(TP_NN_EMULATE_DSP) && !(defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP)
/* C models of the instructions (Arm ARMv7-M Architecture Reference Manual, A7.7). */
static inline int32_t byte_lane(uint32_t v, int lane)
{
    return (int32_t)((v >> (8 * lane)) & 0xffu) - (int32_t)(((v >> (8 * lane)) & 0x80u) << 1);
}
static inline int32_t half_lane(uint32_t v, int lane)
{
    return (int32_t)((v >> (16 * lane)) & 0xffffu) -
           (int32_t)(((v >> (16 * lane)) & 0x8000u) << 1);
}
static inline uint32_t pack16(int32_t lo, int32_t hi)
{
    return ((uint32_t)lo & 0xffffu) | (((uint32_t)hi & 0xffffu) << 16);
}
static inline uint32_t sxtb16(uint32_t x) { return pack16(byte_lane(x, 0), byte_lane(x, 2)); }
static inline uint32_t sxtb16_ror8(uint32_t x)
{
    return pack16(byte_lane(x, 1), byte_lane(x, 3));
}
static inline uint32_t sxtab16(uint32_t a, uint32_t x)
{
    return pack16(half_lane(a, 0) + byte_lane(x, 0), half_lane(a, 1) + byte_lane(x, 2));
}
static inline uint32_t sxtab16_ror8(uint32_t a, uint32_t x)
{
    return pack16(half_lane(a, 0) + byte_lane(x, 1), half_lane(a, 1) + byte_lane(x, 3));
}
static inline int32_t smlad(uint32_t a, uint32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(half_lane(a, 0) * half_lane(b, 0)) +
                     (uint32_t)(half_lane(a, 1) * half_lane(b, 1)));
}
static inline int32_t smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(half_lane(a, 0) * half_lane(b, 0)));
}
static inline int32_t smlatt(uint32_t a, uint32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(half_lane(a, 1) * half_lane(b, 1)));
}
#else
static inline uint32_t sxtb16(uint32_t x) { return __builtin_arm_sxtb16(x); }
static inline uint32_t sxtb16_ror8(uint32_t x)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
static inline uint32_t sxtab16(uint32_t a, uint32_t x) { return __builtin_arm_sxtab16(a, x); }
static inline uint32_t sxtab16_ror8(uint32_t a, uint32_t x)
{
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}
static inline int32_t smlad(uint32_t a, uint32_t b, int32_t acc)
{
    return __builtin_arm_smlad(a, b, acc);
}
static inline int32_t smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    return __builtin_arm_smlabb(a, b, acc);
}
static inline int32_t smlatt(uint32_t a, uint32_t b, int32_t acc)
{
    return __builtin_arm_smlatt(a, b, acc);
}
#endif

#endif /* TP_DSP */

/* ---- the matrix product -------------------------------------------------------------- */

/*
 * out[r][o] = requant(bias[o] + sum_k x[r][k] * w[o][k]) for rows r < rows, channels o <
 * out_c; x rows `x_stride` apart, out rows `out_stride` apart; w packed as described at the
 * top (pairs of channels, 8 bytes per step of 4; `depth` inputs, zero-padded to a multiple of
 * 4 in w only); bias has an even number of entries.
 */
static void gemm_s8(const int8_t *x, int32_t x_stride, int32_t rows, int32_t depth,
                    const int8_t *w, const int32_t *bias, int32_t out_c,
                    const tp_requant_t *q, int8_t *out, int32_t out_stride)
{
    const int32_t steps = depth >> 2, tail = depth & 3;
    const int32_t pair_bytes = 8 * ((depth + 3) >> 2);
    int32_t r, o, s, j;

    for (r = 0; r < rows; r += 2) {
        const int32_t two = r + 1 < rows;
        const int8_t *xa0 = x + (size_t)r * (size_t)x_stride;
        const int8_t *xb0 = two ? xa0 + x_stride : xa0;
        int8_t *oa = out + (size_t)r * (size_t)out_stride;
        for (o = 0; o < out_c; o += 2) {
            const int8_t *wp = w + (size_t)(o >> 1) * (size_t)pair_bytes;
            const int8_t *xa = xa0, *xb = xb0;
            int32_t a0 = bias[o], a1 = bias[o + 1];
            int32_t b0 = a0, b1 = a1;
#if TP_DSP
            for (s = 0; s < steps; ++s) {
                const uint32_t va = load32(xa), vb = load32(xb);
                const uint32_t xa_lo = sxtb16(va), xa_hi = sxtb16_ror8(va);
                const uint32_t xb_lo = sxtb16(vb), xb_hi = sxtb16_ror8(vb);
                uint32_t wv = ((const uint32_t *)(const void *)wp)[0];
                uint32_t w_lo = sxtb16(wv), w_hi = sxtb16_ror8(wv);
                a0 = smlad(xa_lo, w_lo, a0);
                a0 = smlad(xa_hi, w_hi, a0);
                b0 = smlad(xb_lo, w_lo, b0);
                b0 = smlad(xb_hi, w_hi, b0);
                wv = ((const uint32_t *)(const void *)wp)[1];
                w_lo = sxtb16(wv);
                w_hi = sxtb16_ror8(wv);
                a1 = smlad(xa_lo, w_lo, a1);
                a1 = smlad(xa_hi, w_hi, a1);
                b1 = smlad(xb_lo, w_lo, b1);
                b1 = smlad(xb_hi, w_hi, b1);
                xa += 4;
                xb += 4;
                wp += 8;
            }
#else
            for (s = 0; s < steps; ++s) {
                for (j = 0; j < 4; ++j) {
                    a0 += (int32_t)xa[j] * wp[j];
                    a1 += (int32_t)xa[j] * wp[4 + j];
                    b0 += (int32_t)xb[j] * wp[j];
                    b1 += (int32_t)xb[j] * wp[4 + j];
                }
                xa += 4;
                xb += 4;
                wp += 8;
            }
#endif
            for (j = 0; j < tail; ++j) {
                a0 += (int32_t)xa[j] * wp[j];
                a1 += (int32_t)xa[j] * wp[4 + j];
                b0 += (int32_t)xb[j] * wp[j];
                b1 += (int32_t)xb[j] * wp[4 + j];
            }
            oa[o] = requant_fast(q, o, a0);
            if (o + 1 < out_c) {
                oa[o + 1] = requant_fast(q, o + 1, a1);
            }
            if (two) {
                oa[out_stride + o] = requant_fast(q, o, b0);
                if (o + 1 < out_c) {
                    oa[out_stride + o + 1] = requant_fast(q, o + 1, b1);
                }
            }
        }
    }
}

/* ---- CONV_2D ------------------------------------------------------------------------- */

static void copy_bytes(int8_t *dst, const int8_t *src, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        dst[i] = src[i];
    }
}

static void fill_bytes(int8_t *dst, int8_t value, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        dst[i] = value;
    }
}

/* One output pixel's receptive field, in filter order (OHWI's H, W, I), padding = zp. */
static void im2col_pixel(const tp_conv_params_t *p, const tp_shape4_t *in_shape,
                         const int8_t *in_batch, int32_t k_h, int32_t k_w, int32_t oy,
                         int32_t ox, int8_t *col)
{
    const int32_t in_h = in_shape->h, in_w = in_shape->w, in_c = in_shape->c;
    const int8_t zero_point = (int8_t)(-p->input_offset);
    const int32_t y0 = oy * p->stride_h - p->pad_h, x0 = ox * p->stride_w - p->pad_w;
    int32_t fy, fx;
    for (fy = 0; fy < k_h; ++fy) {
        const int32_t iy = y0 + p->dilation_h * fy;
        const int8_t *row = in_batch + (size_t)iy * (size_t)in_w * (size_t)in_c;
        if (iy < 0 || iy >= in_h) {
            fill_bytes(col, zero_point, k_w * in_c);
            col += k_w * in_c;
            continue;
        }
        if (p->dilation_w == 1 && x0 >= 0 && x0 + k_w <= in_w) {
            copy_bytes(col, row + (size_t)x0 * (size_t)in_c, k_w * in_c);
            col += k_w * in_c;
            continue;
        }
        for (fx = 0; fx < k_w; ++fx) {
            const int32_t ix = x0 + p->dilation_w * fx;
            if (ix < 0 || ix >= in_w) {
                fill_bytes(col, zero_point, in_c);
            } else {
                copy_bytes(col, row + (size_t)ix * (size_t)in_c, in_c);
            }
            col += in_c;
        }
    }
}

void tp_conv2d_gemm_s8(const tp_conv_params_t *p, const tp_shape4_t *in_shape,
                       const int8_t *in, const tp_shape4_t *filter_shape,
                       const int8_t *packed_filter, const int32_t *folded_bias,
                       const tp_shape4_t *out_shape, int8_t *out, int8_t *scratch)
{
    const int32_t k_h = filter_shape->h, k_w = filter_shape->w, in_c = in_shape->c;
    const int32_t out_h = out_shape->h, out_w = out_shape->w, out_c = out_shape->c;
    const int32_t depth = k_h * k_w * in_c;
    const int32_t row = (depth + 3) & ~3; /* im2col rows keep the steps word-aligned */
    const size_t in_image = (size_t)in_shape->h * (size_t)in_shape->w * (size_t)in_c;
    const size_t out_image = (size_t)out_h * (size_t)out_w * (size_t)out_c;
    int32_t b, oy, i;

    for (b = 0; b < out_shape->n; ++b) {
        const int8_t *image = in + (size_t)b * in_image;
        int8_t *dst = out + (size_t)b * out_image;
        if (k_h == 1 && k_w == 1 && p->pad_h == 0 && p->pad_w == 0) {
            /* 1x1, unpadded: each output row reads every stride_w-th input pixel in place */
            for (oy = 0; oy < out_h; ++oy) {
                const int8_t *src = image + (size_t)oy * (size_t)p->stride_h *
                                                (size_t)in_shape->w * (size_t)in_c;
                gemm_s8(src, p->stride_w * in_c, out_w, in_c, packed_filter, folded_bias,
                        out_c, &p->out, dst + (size_t)oy * (size_t)out_w * (size_t)out_c,
                        out_c);
            }
            continue;
        }
        for (i = 0; i < out_h * out_w; i += 2) {
            const int32_t n = i + 1 < out_h * out_w ? 2 : 1;
            int32_t k;
            for (k = 0; k < n; ++k) {
                int8_t *col = scratch + (size_t)k * (size_t)row;
                im2col_pixel(p, in_shape, image, k_h, k_w, (i + k) / out_w, (i + k) % out_w,
                             col);
                fill_bytes(col + depth, 0, row - depth);
            }
            gemm_s8(scratch, row, n, row, packed_filter, folded_bias, out_c, &p->out,
                    dst + (size_t)i * (size_t)out_c, out_c);
        }
    }
}

/* ---- FULLY_CONNECTED ----------------------------------------------------------------- */

void tp_fully_connected_gemm_s8(const tp_fc_params_t *p, int32_t batches, int32_t accum_depth,
                                int32_t output_depth, const int8_t *in,
                                const int8_t *packed_filter, const int32_t *folded_bias,
                                int8_t *out)
{
    gemm_s8(in, accum_depth, batches, accum_depth, packed_filter, folded_bias, output_depth,
            &p->out, out, output_depth);
}

/* ---- DEPTHWISE_CONV_2D --------------------------------------------------------------- */

/*
 * Depth multiplier 1, dilation 1: for each output pixel, the taps inside the image are rows
 * fy0..fy1-1 and columns fx0..fx1-1 of the filter; every other tap reads padding, which adds
 * nothing in TFLite. Channels four at a time, then one at a time.
 */
void tp_depthwise_conv2d_dm1_s8(const tp_conv_params_t *p, const tp_shape4_t *in_shape,
                                const int8_t *in, const tp_shape4_t *filter_shape,
                                const int8_t *filter, const int32_t *bias,
                                const tp_shape4_t *out_shape, int8_t *out)
{
    const int32_t in_h = in_shape->h, in_w = in_shape->w, ch = in_shape->c;
    const int32_t k_h = filter_shape->h, k_w = filter_shape->w;
    const int32_t out_h = out_shape->h, out_w = out_shape->w;
    const int32_t offset = p->input_offset;
    const size_t in_row = (size_t)in_w * (size_t)ch, w_row = (size_t)k_w * (size_t)ch;
#if TP_DSP
    const uint32_t offset2 = ((uint32_t)offset & 0xffffu) | ((uint32_t)offset << 16);
#endif
    int32_t b, oy, ox, c, fy, fx;

    for (b = 0; b < out_shape->n; ++b) {
        const int8_t *image = in + (size_t)b * (size_t)in_h * in_row;
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t y0 = oy * p->stride_h - p->pad_h;
            const int32_t fy0 = y0 < 0 ? -y0 : 0;
            const int32_t fy1 = k_h < in_h - y0 ? k_h : in_h - y0;
            for (ox = 0; ox < out_w; ++ox) {
                const int32_t x0 = ox * p->stride_w - p->pad_w;
                const int32_t fx0 = x0 < 0 ? -x0 : 0;
                const int32_t fx1 = k_w < in_w - x0 ? k_w : in_w - x0;
                const int32_t taps_x = fx1 - fx0;
                /* the first tap inside the image, and the filter tap it meets */
                const int8_t *in0 = image + (size_t)(y0 + fy0) * in_row +
                                    (size_t)(x0 + fx0) * (size_t)ch;
                const int8_t *w0 = filter + (size_t)fy0 * w_row + (size_t)fx0 * (size_t)ch;
                int8_t *dst = out + (((size_t)b * (size_t)out_h + (size_t)oy) * (size_t)out_w +
                                     (size_t)ox) * (size_t)ch;
                c = 0;
#if TP_DSP
                for (; c + 4 <= ch; c += 4) {
                    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                    const int8_t *ir = in0 + c, *wr = w0 + c;
                    if (bias != NULL) {
                        a0 = bias[c];
                        a1 = bias[c + 1];
                        a2 = bias[c + 2];
                        a3 = bias[c + 3];
                    }
                    for (fy = fy0; fy < fy1; ++fy) {
                        const int8_t *ip = ir, *wp = wr;
                        for (fx = 0; fx < taps_x; ++fx) {
                            const uint32_t xv = load32(ip), wv = load32(wp);
                            const uint32_t x02 = sxtab16(offset2, xv);
                            const uint32_t x13 = sxtab16_ror8(offset2, xv);
                            const uint32_t w02 = sxtb16(wv), w13 = sxtb16_ror8(wv);
                            a0 = smlabb(x02, w02, a0);
                            a2 = smlatt(x02, w02, a2);
                            a1 = smlabb(x13, w13, a1);
                            a3 = smlatt(x13, w13, a3);
                            ip += ch;
                            wp += ch;
                        }
                        ir += in_row;
                        wr += w_row;
                    }
                    dst[c] = requant_fast(&p->out, c, a0);
                    dst[c + 1] = requant_fast(&p->out, c + 1, a1);
                    dst[c + 2] = requant_fast(&p->out, c + 2, a2);
                    dst[c + 3] = requant_fast(&p->out, c + 3, a3);
                }
#endif
                for (; c < ch; ++c) {
                    int32_t acc = bias != NULL ? bias[c] : 0;
                    const int8_t *ir = in0 + c, *wr = w0 + c;
                    for (fy = fy0; fy < fy1; ++fy) {
                        for (fx = 0; fx < taps_x; ++fx) {
                            acc += (int32_t)wr[(size_t)fx * (size_t)ch] *
                                   ((int32_t)ir[(size_t)fx * (size_t)ch] + offset);
                        }
                        ir += in_row;
                        wr += w_row;
                    }
                    dst[c] = requant_fast(&p->out, c, acc);
                }
            }
        }
    }
}
