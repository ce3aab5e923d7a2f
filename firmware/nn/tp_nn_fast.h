/*
 * tp_nn_fast.h: the kernels the generated models run for their heavy layers, with the same
 * results as tp_nn.c's reference ones (bit for bit; tests/test_nn_kernels.py checks both
 * against tflite-micro), organised for speed:
 *
 * - CONV_2D and FULLY_CONNECTED are one int8 matrix product (gemm_s8): two input rows
 *   (pixels) against two output channels at a time (a single row against four), four inputs
 *   per step. The weights come
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
 *
 * The kernels are static inline here: the generated model (tp_model.c) calls them with its
 * parameter structs, which are constants there, so the compiler specialises every layer
 * (shapes, strides, zero points, clamps become immediates and dead paths go). tp_nn_fast.c
 * gives each an external definition too, for the host's ctypes runner.
 */
#ifndef TP_NN_FAST_H
#define TP_NN_FAST_H

#include "tp_nn.h"

#if defined(__GNUC__)
#define TP_INLINE static inline __attribute__((always_inline))
#else
#define TP_INLINE static inline
#endif

#if (defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP) || defined(TP_NN_EMULATE_DSP)
#define TP_DSP 1
#else
#define TP_DSP 0
#endif

/* ---- requantisation ------------------------------------------------------------------ */

/*
 * A tp_requant_t's values as locals: the kernels store int8 outputs, which the compiler must
 * assume may alias the struct, so reading it once keeps these in registers.
 */
typedef struct {
    const int32_t *multiplier, *shift;
    int32_t channel_mask; /* -1 per channel, 0 per tensor: index = channel & mask */
    int32_t offset, act_min, act_max, shifts_left;
} requant_t;

static inline requant_t requant_of(const tp_requant_t *q)
{
    requant_t r;
    r.multiplier = q->multiplier;
    r.shift = q->shift;
    r.channel_mask = q->per_channel ? -1 : 0;
    r.offset = q->output_offset;
    r.act_min = q->act_min;
    r.act_max = q->act_max;
    r.shifts_left = q->shifts_left;
    return r;
}

/* Arithmetic right shift, 0 <= e <= 31 (GCC and Clang emit one ASR for it). */
static inline int32_t asr(int32_t x, int32_t e)
{
    return x >= 0 ? (int32_t)(x >> e) : (int32_t)~(~x >> e);
}

/*
 * TFLite's MultiplyByQuantizedMultiplier with a non-negative Q31 multiplier (as
 * QuantizeMultiplier gives: never INT32_MIN, so SaturatingRoundingDoublingHighMul never
 * saturates), then the output offset and clamp.
 *
 * The high multiply's nudge-then-truncate equals floor((x * m + 2^30) / 2^31) for both
 * signs, taken as bits 31..62 of the 64-bit sum (a logical shift keeps the same bits).
 * RoundingDivideByPOT(h, e) rounds half away from zero: q + [r > 2^(e-1)] for negative h and
 * q + [r >= 2^(e-1)] otherwise (h = q 2^e + r); with h' = h - 1 for negative h (never below
 * INT32_MIN, as |h| <= |x| here) both are floor((h' + 2^(e-1)) / 2^e) = (h' >> e) + bit e-1
 * of h', with no addition that could overflow.
 */
static inline int8_t requant_with(const requant_t *q, int32_t multiplier, int32_t shift,
                                  int32_t acc)
{
    int32_t h;
    int64_t ab;
    if (q->shifts_left && shift > 0) {
        acc = (int32_t)((uint32_t)acc << shift);
    }
    ab = (int64_t)acc * (int64_t)multiplier + ((int64_t)1 << 30);
    h = (int32_t)(uint32_t)((uint64_t)ab >> 31);
    if (shift < 0) {
        const int32_t e = -shift;
        h -= h < 0 ? 1 : 0;
        h = asr(h, e) + (int32_t)(((uint32_t)h >> (e - 1)) & 1u);
    }
    h += q->offset;
    h = h < q->act_min ? q->act_min : h;
    return (int8_t)(h > q->act_max ? q->act_max : h);
}

static inline int8_t requant_fast(const requant_t *q, int32_t channel, int32_t acc)
{
    const int32_t i = channel & q->channel_mask;
    return requant_with(q, q->multiplier[i], q->shift[i], acc);
}

/* ---- DSP instructions ---------------------------------------------------------------- */

static inline uint32_t load32(const int8_t *p)
{
    uint32_t v;
    __builtin_memcpy(&v, p, 4); /* one LDR where unaligned word loads are allowed (M3 up) */
    return v;
}

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
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
#else
/* C models of the instructions (Arm ARMv7-M Architecture Reference Manual, A7.7): what the
   matrix product runs on cores without the DSP extension, and the host checks. */
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
#endif

/* ---- the matrix product -------------------------------------------------------------- */

static inline int32_t packed_steps(int32_t depth) { return (depth + 3) >> 2; }

/* Up to 4 bytes as a little-endian word, zero-filled: a row's last, partial step. */
static inline uint32_t tail_word(const int8_t *p, int32_t n)
{
    uint32_t v = 0;
    int32_t i;
    for (i = 0; i < n; ++i) {
        v |= (uint32_t)(uint8_t)p[i] << (8 * i);
    }
    return v;
}

/*
 * One or two rows of int8 widened to int16 lanes in the order SMLAD meets the weights: per
 * step of 4 inputs, the pair (x0, x2) then (x1, x3) of row a, then the same of row b when
 * there is one (16 bytes per step for two rows, 8 for one); the last step zero-filled.
 */
TP_INLINE void widen_rows(const int8_t *ra, const int8_t *rb, int32_t depth, uint32_t *xw)
{
    const int32_t full = depth >> 2, tail = depth & 3;
    int32_t s;
    for (s = 0; s < full; ++s) {
        const uint32_t va = load32(ra);
        xw[0] = sxtb16(va);
        xw[1] = sxtb16_ror8(va);
        ra += 4;
        if (rb != NULL) {
            const uint32_t vb = load32(rb);
            xw[2] = sxtb16(vb);
            xw[3] = sxtb16_ror8(vb);
            rb += 4;
            xw += 4;
        } else {
            xw += 2;
        }
    }
    if (tail) {
        const uint32_t va = tail_word(ra, tail);
        xw[0] = sxtb16(va);
        xw[1] = sxtb16_ror8(va);
        if (rb != NULL) {
            const uint32_t vb = tail_word(rb, tail);
            xw[2] = sxtb16(vb);
            xw[3] = sxtb16_ror8(vb);
        }
    }
}

/*
 * out[r][o] = requant(bias[o] + sum_k x[r][k] * w[o][k]) for rows r < rows, channels o <
 * out_c; x rows `x_stride` apart, out rows `out_stride` apart; w packed as described at the
 * top, its channels and bias zero-padded to a multiple of 4; xw: 16 * steps bytes of
 * scratch (steps = depth / 4 rounded up), word-aligned. Two rows at a time against two
 * channels, 16 MACs in 4 + 1 + 1 loads, 4 SXTB16 and 8 SMLAD; a last odd row against four
 * (two for the last one or two channels).
 */
TP_INLINE void gemm_s8(const int8_t *x, int32_t x_stride, int32_t rows, int32_t depth,
                    const int8_t *w, const int32_t *bias, int32_t out_c,
                    const tp_requant_t *q, int8_t *out, int32_t out_stride, uint32_t *xw)
{
    const requant_t rq = requant_of(q);
    const int32_t steps = packed_steps(depth);
    const uint32_t *weights = (const uint32_t *)(const void *)w;
    int32_t r, o, s;

    for (r = 0; r + 1 < rows; r += 2) {
        const int8_t *xa = x + (size_t)r * (size_t)x_stride;
        int8_t *oa = out + (size_t)r * (size_t)out_stride;
        int8_t *ob = oa + out_stride;
        const uint32_t *wp = weights;
        widen_rows(xa, xa + x_stride, depth, xw);
        for (o = 0; o < out_c; o += 2) {
            const uint32_t *xp = xw;
            int32_t a0 = bias[o], a1 = bias[o + 1];
            int32_t b0 = a0, b1 = a1;
            int32_t i0, i1;
            int8_t ya0, ya1, yb0, yb1;
            for (s = steps; s > 0; --s) {
                const uint32_t a02 = xp[0], a13 = xp[1], b02 = xp[2], b13 = xp[3];
                uint32_t wv = wp[0];
                uint32_t w02 = sxtb16(wv), w13 = sxtb16_ror8(wv);
                a0 = smlad(a02, w02, a0);
                a0 = smlad(a13, w13, a0);
                b0 = smlad(b02, w02, b0);
                b0 = smlad(b13, w13, b0);
                wv = wp[1];
                w02 = sxtb16(wv);
                w13 = sxtb16_ror8(wv);
                a1 = smlad(a02, w02, a1);
                a1 = smlad(a13, w13, a1);
                b1 = smlad(b02, w02, b1);
                b1 = smlad(b13, w13, b1);
                xp += 4;
                wp += 2;
            }
            /* every parameter read before the first store (an int8 store may alias them) */
            i0 = o & rq.channel_mask;
            i1 = (o + 1) & rq.channel_mask;
            ya0 = requant_with(&rq, rq.multiplier[i0], rq.shift[i0], a0);
            yb0 = requant_with(&rq, rq.multiplier[i0], rq.shift[i0], b0);
            ya1 = requant_with(&rq, rq.multiplier[i1], rq.shift[i1], a1);
            yb1 = requant_with(&rq, rq.multiplier[i1], rq.shift[i1], b1);
            oa[o] = ya0;
            ob[o] = yb0;
            if (o + 1 < out_c) {
                oa[o + 1] = ya1;
                ob[o + 1] = yb1;
            }
        }
    }
    if (r < rows) {
        const int8_t *xa = x + (size_t)r * (size_t)x_stride;
        int8_t *oa = out + (size_t)r * (size_t)out_stride;
        widen_rows(xa, NULL, depth, xw);
        for (o = 0; o + 2 < out_c; o += 4) {
            const uint32_t *w0 = weights + (size_t)o * (size_t)steps, *w1 = w0 + 2 * steps;
            const uint32_t *xp = xw;
            int32_t acc[4];
            int32_t k;
            int32_t r0 = bias[o], r1 = bias[o + 1], r2 = bias[o + 2], r3 = bias[o + 3];
            for (s = steps; s > 0; --s) {
                const uint32_t x02 = xp[0], x13 = xp[1];
                uint32_t wv = w0[0];
                r0 = smlad(x02, sxtb16(wv), r0);
                r0 = smlad(x13, sxtb16_ror8(wv), r0);
                wv = w0[1];
                r1 = smlad(x02, sxtb16(wv), r1);
                r1 = smlad(x13, sxtb16_ror8(wv), r1);
                wv = w1[0];
                r2 = smlad(x02, sxtb16(wv), r2);
                r2 = smlad(x13, sxtb16_ror8(wv), r2);
                wv = w1[1];
                r3 = smlad(x02, sxtb16(wv), r3);
                r3 = smlad(x13, sxtb16_ror8(wv), r3);
                xp += 2;
                w0 += 2;
                w1 += 2;
            }
            acc[0] = r0;
            acc[1] = r1;
            acc[2] = r2;
            acc[3] = r3;
            for (k = 0; k < 4 && o + k < out_c; ++k) {
                oa[o + k] = requant_fast(&rq, o + k, acc[k]);
            }
        }
        if (o < out_c) { /* one or two channels left: one pair */
            const uint32_t *w0 = weights + (size_t)o * (size_t)steps;
            const uint32_t *xp = xw;
            int32_t r0 = bias[o], r1 = bias[o + 1];
            for (s = steps; s > 0; --s) {
                const uint32_t x02 = xp[0], x13 = xp[1];
                uint32_t wv = w0[0];
                r0 = smlad(x02, sxtb16(wv), r0);
                r0 = smlad(x13, sxtb16_ror8(wv), r0);
                wv = w0[1];
                r1 = smlad(x02, sxtb16(wv), r1);
                r1 = smlad(x13, sxtb16_ror8(wv), r1);
                xp += 2;
                w0 += 2;
            }
            oa[o] = requant_fast(&rq, o, r0);
            if (o + 1 < out_c) {
                oa[o + 1] = requant_fast(&rq, o + 1, r1);
            }
        }
    }
}

/* ---- CONV_2D ------------------------------------------------------------------------- */

static inline void copy_bytes(int8_t *dst, const int8_t *src, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        dst[i] = src[i];
    }
}

static inline void fill_bytes(int8_t *dst, int8_t value, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        dst[i] = value;
    }
}

/* One output pixel's receptive field, in filter order (OHWI's H, W, I), padding = zp. */
TP_INLINE void im2col_pixel(const tp_conv_params_t *p, const tp_shape4_t *in_shape,
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

TP_INLINE void tp_conv2d_gemm_s8_inline(
    const tp_conv_params_t *p, const tp_shape4_t *in_shape, const int8_t *in, const tp_shape4_t *filter_shape,
                       const int8_t *packed_filter, const int32_t *folded_bias,
                       const tp_shape4_t *out_shape, int8_t *out, int8_t *scratch)
{
    const int32_t k_h = filter_shape->h, k_w = filter_shape->w, in_c = in_shape->c;
    const int32_t out_h = out_shape->h, out_w = out_shape->w, out_c = out_shape->c;
    const int32_t depth = k_h * k_w * in_c;
    const int32_t row = 4 * packed_steps(depth);
    /* scratch: two widened rows (16 bytes a step), then two im2col rows of `row` bytes */
    uint32_t *xw = (uint32_t *)(void *)scratch;
    int8_t *col = scratch + (size_t)4 * (size_t)row;
    const size_t in_image = (size_t)in_shape->h * (size_t)in_shape->w * (size_t)in_c;
    const size_t out_image = (size_t)out_h * (size_t)out_w * (size_t)out_c;
    int32_t b, oy, i;

    for (b = 0; b < out_shape->n; ++b) {
        const int8_t *image = in + (size_t)b * in_image;
        int8_t *dst = out + (size_t)b * out_image;
        if (k_h == 1 && k_w == 1 && p->pad_h == 0 && p->pad_w == 0) {
            /* 1x1, unpadded: the input pixels are the rows, read in place */
            if (p->stride_h == 1 && p->stride_w == 1) {
                gemm_s8(image, in_c, out_h * out_w, in_c, packed_filter, folded_bias, out_c,
                        &p->out, dst, out_c, xw);
                continue;
            }
            for (oy = 0; oy < out_h; ++oy) {
                const int8_t *src = image + (size_t)oy * (size_t)p->stride_h *
                                                (size_t)in_shape->w * (size_t)in_c;
                gemm_s8(src, p->stride_w * in_c, out_w, in_c, packed_filter, folded_bias,
                        out_c, &p->out, dst + (size_t)oy * (size_t)out_w * (size_t)out_c,
                        out_c, xw);
            }
            continue;
        }
        for (i = 0; i < out_h * out_w; i += 2) {
            const int32_t n = i + 1 < out_h * out_w ? 2 : 1;
            int32_t k;
            for (k = 0; k < n; ++k) {
                im2col_pixel(p, in_shape, image, k_h, k_w, (i + k) / out_w, (i + k) % out_w,
                             col + (size_t)k * (size_t)row);
            }
            gemm_s8(col, row, n, depth, packed_filter, folded_bias, out_c, &p->out,
                    dst + (size_t)i * (size_t)out_c, out_c, xw);
        }
    }
}

/* ---- FULLY_CONNECTED ----------------------------------------------------------------- */

TP_INLINE void tp_fully_connected_gemm_s8_inline(
    const tp_fc_params_t *p, int32_t batches, int32_t accum_depth,
                                int32_t output_depth, const int8_t *in,
                                const int8_t *packed_filter, const int32_t *folded_bias,
                                int8_t *out, int8_t *scratch)
{
    gemm_s8(in, accum_depth, batches, accum_depth, packed_filter, folded_bias, output_depth,
            &p->out, out, output_depth, (uint32_t *)(void *)scratch);
}

/* ---- DEPTHWISE_CONV_2D --------------------------------------------------------------- */

#if TP_DSP
/* One tap for four channels: (x + offset) * w into a0..a3; SXTAB16 widens and offsets two
   input lanes at a time, the weights come widened (w02: channels 0 and 2, w13: 1 and 3). */
static inline void tap4(const int8_t *ip, uint32_t w02, uint32_t w13, uint32_t offset2,
                        int32_t *a0, int32_t *a1, int32_t *a2, int32_t *a3)
{
    const uint32_t xv = load32(ip);
    const uint32_t x02 = sxtab16(offset2, xv), x13 = sxtab16_ror8(offset2, xv);
    *a0 = smlabb(x02, w02, *a0);
    *a2 = smlatt(x02, w02, *a2);
    *a1 = smlabb(x13, w13, *a1);
    *a3 = smlatt(x13, w13, *a3);
}
#endif

/*
 * Depth multiplier 1, dilation 1; filter packed by the host (pack_depthwise: int16, per group
 * of 4 channels, every tap's 4 weights in turn in the order 0, 2, 1, 3, channels zero-padded
 * to a multiple of 4). For
 * each output pixel the taps inside the image are rows fy0..fy1-1 and columns fx0..fx1-1 of
 * the filter; every other tap reads padding, which adds nothing in TFLite. A 3x3 filter
 * wholly inside the image (the interior, most pixels) runs unrolled. Four channels per step
 * on DSP cores, then one at a time.
 */
TP_INLINE void tp_depthwise_conv2d_dm1_s8_inline(
    const tp_conv_params_t *p, const tp_shape4_t *in_shape,
                                const int8_t *in, const tp_shape4_t *filter_shape,
                                const int16_t *filter, const int32_t *bias,
                                const tp_shape4_t *out_shape, int8_t *out)
{
    const int32_t in_h = in_shape->h, in_w = in_shape->w, ch = in_shape->c;
    const int32_t k_h = filter_shape->h, k_w = filter_shape->w, taps = k_h * k_w;
    const int32_t out_h = out_shape->h, out_w = out_shape->w;
    const int32_t offset = p->input_offset;
    const requant_t rq = requant_of(&p->out);
    const size_t in_row = (size_t)in_w * (size_t)ch;
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
                /* the first tap inside the image */
                const int8_t *in0 = image + (size_t)(y0 + fy0) * in_row +
                                    (size_t)(x0 + fx0) * (size_t)ch;
                int8_t *dst = out + (((size_t)b * (size_t)out_h + (size_t)oy) * (size_t)out_w +
                                     (size_t)ox) * (size_t)ch;
                c = 0;
#if TP_DSP
                {
                    const int interior = k_h == 3 && k_w == 3 && fy0 == 0 && fy1 == 3 &&
                                         fx0 == 0 && fx1 == 3;
                    for (; c + 4 <= ch; c += 4) {
                        const uint32_t *wg = (const uint32_t *)(const void *)filter +
                                             (size_t)(c >> 2) * (size_t)taps * 2;
                        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, i0, i1, i2, i3;
                        int8_t y[4];
                        if (bias != NULL) {
                            a0 = bias[c];
                            a1 = bias[c + 1];
                            a2 = bias[c + 2];
                            a3 = bias[c + 3];
                        }
                        if (interior) {
                            const int8_t *ip = in0 + c;
                            for (fy = 0; fy < 3; ++fy) {
                                tap4(ip, wg[0], wg[1], offset2, &a0, &a1, &a2, &a3);
                                tap4(ip + ch, wg[2], wg[3], offset2, &a0, &a1, &a2, &a3);
                                tap4(ip + 2 * ch, wg[4], wg[5], offset2, &a0, &a1, &a2, &a3);
                                ip += in_row;
                                wg += 6;
                            }
                        } else {
                            const int8_t *ir = in0 + c;
                            for (fy = fy0; fy < fy1; ++fy) {
                                const int8_t *ip = ir;
                                const uint32_t *wp = wg + 2 * (fy * k_w + fx0);
                                for (fx = fx0; fx < fx1; ++fx) {
                                    tap4(ip, wp[0], wp[1], offset2, &a0, &a1, &a2, &a3);
                                    wp += 2;
                                    ip += ch;
                                }
                                ir += in_row;
                            }
                        }
                        /* every parameter read before the first store */
                        i0 = c & rq.channel_mask;
                        i1 = (c + 1) & rq.channel_mask;
                        i2 = (c + 2) & rq.channel_mask;
                        i3 = (c + 3) & rq.channel_mask;
                        y[0] = requant_with(&rq, rq.multiplier[i0], rq.shift[i0], a0);
                        y[1] = requant_with(&rq, rq.multiplier[i1], rq.shift[i1], a1);
                        y[2] = requant_with(&rq, rq.multiplier[i2], rq.shift[i2], a2);
                        y[3] = requant_with(&rq, rq.multiplier[i3], rq.shift[i3], a3);
                        __builtin_memcpy(dst + c, y, 4);
                    }
                }
#endif
                for (; c < ch; ++c) {
                    /* lane of channel c in its group's 4: 0, 2, 1, 3 -> 0, 1, 2, 3 */
                    const int16_t *wg = filter + (size_t)(c >> 2) * (size_t)taps * 4 +
                                        (size_t)((c & 1) * 2 + ((c >> 1) & 1));
                    const int8_t *ir = in0 + c;
                    int32_t acc = bias != NULL ? bias[c] : 0;
                    for (fy = fy0; fy < fy1; ++fy) {
                        for (fx = fx0; fx < fx1; ++fx) {
                            acc += (int32_t)wg[4 * (fy * k_w + fx)] *
                                   ((int32_t)ir[(size_t)(fx - fx0) * (size_t)ch] + offset);
                        }
                        ir += in_row;
                    }
                    dst[c] = requant_fast(&rq, c, acc);
                }
            }
        }
    }
}

#endif /* TP_NN_FAST_H */
