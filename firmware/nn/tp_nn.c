/*
 * tp_nn: TFLite's int8 reference arithmetic, op by op. See tp_nn.h for the conventions.
 *
 * The fixed-point helpers below follow the public definitions TFLite uses (its
 * MultiplyByQuantizedMultiplier, built on gemmlowp's SaturatingRoundingDoublingHighMul and
 * RoundingDivideByPOT, in TFLite's default "double rounding" form), and the softmax follows
 * TFLite's quantised reference softmax (gemmlowp fixed-point exp and reciprocal). Rounding
 * and saturation are reproduced exactly, as every one of them can change an output by one.
 *
 * int32_t is two's complement by definition (C99 7.18.1.1), so masks on negative values are
 * well defined; shifts of negative values go through helpers that avoid the
 * implementation-defined right shift, and left shifts that may wrap are done on uint32_t.
 * Only the compiler's own freestanding headers are used (<stdint.h>, <stddef.h>).
 */
#include "tp_nn.h"

#define TP_INT32_MAX ((int32_t)0x7fffffff)
#define TP_INT32_MIN ((int32_t)(-TP_INT32_MAX - 1))

/* ---- fixed-point primitives ------------------------------------------------------------ */

/* Arithmetic (flooring) right shift, 0 <= e <= 31, without relying on how >> treats negatives. */
static inline int32_t asr(int32_t x, int32_t e)
{
    return x >= 0 ? (int32_t)(x >> e) : (int32_t)~(~x >> e);
}

/* x * 2^e with two's complement wrap-around, as TFLite's `x * (1 << e)` behaves in practice. */
static inline int32_t shl_wrap(int32_t x, int32_t e)
{
    return (int32_t)((uint32_t)x << e);
}

/*
 * gemmlowp SaturatingRoundingDoublingHighMul: the high 32 bits of 2*a*b, rounded half away
 * from zero (nudge of +-2^30 before a truncating division by 2^31); the one overflowing case,
 * a == b == INT32_MIN, saturates to INT32_MAX.
 */
static inline int32_t srdhm(int32_t a, int32_t b)
{
    int64_t ab;
    int64_t nudge;
    if (a == b && a == TP_INT32_MIN) {
        return TP_INT32_MAX;
    }
    ab = (int64_t)a * (int64_t)b;
    nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31)); /* C99 division truncates to zero */
}

/*
 * srdhm for a non-negative Q31 multiplier b (QuantizeMultiplier's; never INT32_MIN, so the
 * saturating case cannot occur): the nudge-then-truncate above equals
 * floor((a * b + 2^30) / 2^31) for both signs, taken as bits 31..62 of the 64-bit sum.
 */
static inline int32_t srdhm_q31(int32_t a, int32_t b)
{
    const int64_t ab = (int64_t)a * (int64_t)b + ((int64_t)1 << 30);
    return (int32_t)(uint32_t)((uint64_t)ab >> 31);
}

/*
 * gemmlowp RoundingDivideByPOT: x / 2^e rounded to nearest, ties away from zero
 * (the remainder is compared with half the divisor, plus one for negative x). 0 <= e <= 31.
 */
static inline int32_t rdbpot(int32_t x, int32_t e)
{
    const int32_t mask = (int32_t)(((int64_t)1 << e) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return asr(x, e) + (remainder > threshold ? 1 : 0);
}

/*
 * gemmlowp SaturatingRoundingMultiplyByPOT for a positive exponent: x * 2^e, saturating to
 * the int32 range (used by the fixed-point Rescale that adds fractional bits).
 */
static inline int32_t sat_shl(int32_t x, int32_t e)
{
    const int32_t threshold = (int32_t)(((int32_t)1 << (31 - e)) - 1);
    if (x > threshold) {
        return TP_INT32_MAX;
    }
    if (x < -threshold) {
        return TP_INT32_MIN;
    }
    return shl_wrap(x, e);
}

/*
 * TFLite MultiplyByQuantizedMultiplier (double rounding): a positive shift multiplies by 2^shift
 * before the high multiply, a negative one is a rounding right shift after it.
 */
static inline int32_t mbqm(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    return rdbpot(srdhm(shl_wrap(x, left), multiplier), right);
}

static inline int32_t clamp(int32_t x, int32_t lo, int32_t hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

/* The output stage of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED. */
static inline int8_t requant(const tp_requant_t *q, int32_t channel, int32_t acc)
{
    const int32_t i = q->per_channel ? channel : 0;
    const int32_t v = mbqm(acc, q->multiplier[i], q->shift[i]) + q->output_offset;
    return (int8_t)clamp(v, q->act_min, q->act_max);
}

/* ---- CONV_2D, DEPTHWISE_CONV_2D ---------------------------------------------------------- */

/*
 * TFLite ConvPerChannel: for each output pixel and channel, sum filter * (input + input_offset)
 * over the taps that fall inside the image (padding contributes nothing, which is the same as
 * padding with the input zero point), add the bias, requantise per output channel.
 */
void tp_conv2d_s8(const tp_conv_params_t *p, const tp_shape4_t *in_shape, const int8_t *in,
                  const tp_shape4_t *filter_shape, const int8_t *filter, const int32_t *bias,
                  const tp_shape4_t *out_shape, int8_t *out)
{
    const int32_t in_h = in_shape->h, in_w = in_shape->w, in_c = in_shape->c;
    const int32_t k_h = filter_shape->h, k_w = filter_shape->w, k_c = filter_shape->c;
    const int32_t out_h = out_shape->h, out_w = out_shape->w, out_c = out_shape->c;
    const int32_t filters_per_group = out_c / (in_c / k_c);
    int32_t b, oy, ox, oc, fy, fx, ic;

    for (b = 0; b < out_shape->n; ++b) {
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t y0 = oy * p->stride_h - p->pad_h;
            for (ox = 0; ox < out_w; ++ox) {
                const int32_t x0 = ox * p->stride_w - p->pad_w;
                for (oc = 0; oc < out_c; ++oc) {
                    const int32_t group_start = (oc / filters_per_group) * k_c;
                    int32_t acc = 0;
                    for (fy = 0; fy < k_h; ++fy) {
                        const int32_t iy = y0 + p->dilation_h * fy;
                        if (iy < 0 || iy >= in_h) {
                            continue;
                        }
                        for (fx = 0; fx < k_w; ++fx) {
                            const int32_t ix = x0 + p->dilation_w * fx;
                            const int8_t *ip;
                            const int8_t *fp;
                            if (ix < 0 || ix >= in_w) {
                                continue;
                            }
                            ip = in + (((size_t)b * in_h + iy) * in_w + ix) * in_c + group_start;
                            fp = filter + (((size_t)oc * k_h + fy) * k_w + fx) * k_c;
                            for (ic = 0; ic < k_c; ++ic) {
                                acc += (int32_t)fp[ic] * ((int32_t)ip[ic] + p->input_offset);
                            }
                        }
                    }
                    if (bias != NULL) {
                        acc += bias[oc];
                    }
                    out[(((size_t)b * out_h + oy) * out_w + ox) * out_c + oc] =
                        requant(&p->out, oc, acc);
                }
            }
        }
    }
}

/*
 * TFLite DepthwiseConvPerChannel: output channel in_channel * depth_multiplier + m sees only
 * its input channel; same padding, bias and per-channel requantisation rules as CONV_2D.
 */
void tp_depthwise_conv2d_s8(const tp_conv_params_t *p, const tp_shape4_t *in_shape,
                            const int8_t *in, const tp_shape4_t *filter_shape,
                            const int8_t *filter, const int32_t *bias,
                            const tp_shape4_t *out_shape, int8_t *out)
{
    const int32_t in_h = in_shape->h, in_w = in_shape->w, in_c = in_shape->c;
    const int32_t k_h = filter_shape->h, k_w = filter_shape->w;
    const int32_t out_h = out_shape->h, out_w = out_shape->w, out_c = out_shape->c;
    const int32_t dm = p->depth_multiplier;
    int32_t b, oy, ox, ic, m, fy, fx;

    for (b = 0; b < out_shape->n; ++b) {
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t y0 = oy * p->stride_h - p->pad_h;
            for (ox = 0; ox < out_w; ++ox) {
                const int32_t x0 = ox * p->stride_w - p->pad_w;
                int8_t *op = out + (((size_t)b * out_h + oy) * out_w + ox) * out_c;
                for (ic = 0; ic < in_c; ++ic) {
                    for (m = 0; m < dm; ++m) {
                        const int32_t oc = ic * dm + m;
                        int32_t acc = 0;
                        for (fy = 0; fy < k_h; ++fy) {
                            const int32_t iy = y0 + p->dilation_h * fy;
                            if (iy < 0 || iy >= in_h) {
                                continue;
                            }
                            for (fx = 0; fx < k_w; ++fx) {
                                const int32_t ix = x0 + p->dilation_w * fx;
                                int32_t v;
                                if (ix < 0 || ix >= in_w) {
                                    continue;
                                }
                                v = in[(((size_t)b * in_h + iy) * in_w + ix) * in_c + ic];
                                acc += (int32_t)filter[((size_t)fy * k_w + fx) * out_c + oc] *
                                       (v + p->input_offset);
                            }
                        }
                        if (bias != NULL) {
                            acc += bias[oc];
                        }
                        op[oc] = requant(&p->out, oc, acc);
                    }
                }
            }
        }
    }
}

/* ---- FULLY_CONNECTED ---------------------------------------------------------------------- */

/* TFLite FullyConnected / FullyConnectedPerChannel (int8): dot product, bias, requantise. */
void tp_fully_connected_s8(const tp_fc_params_t *p, int32_t batches, int32_t accum_depth,
                           int32_t output_depth, const int8_t *in, const int8_t *filter,
                           const int32_t *bias, int8_t *out)
{
    int32_t b, o, d;
    for (b = 0; b < batches; ++b) {
        const int8_t *x = in + (size_t)b * accum_depth;
        for (o = 0; o < output_depth; ++o) {
            const int8_t *w = filter + (size_t)o * accum_depth;
            int32_t acc = 0;
            for (d = 0; d < accum_depth; ++d) {
                acc += ((int32_t)w[d] + p->filter_offset) * ((int32_t)x[d] + p->input_offset);
            }
            if (bias != NULL) {
                acc += bias[o];
            }
            out[(size_t)b * output_depth + o] = requant(&p->out, o, acc);
        }
    }
}

/* ---- AVERAGE_POOL_2D ---------------------------------------------------------------------- */

/*
 * TFLite AveragePool (int8): the mean of the window's taps inside the image (padding is not
 * counted), rounded half away from zero as (sum +- count/2) / count with C division.
 */
static inline int8_t pool_average(const tp_pool_params_t *p, int32_t acc, int32_t count)
{
    if (count > 0) { /* TFLite rejects empty windows; valid shapes have none */
        acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
    }
    return (int8_t)clamp(acc, p->act_min, p->act_max);
}

void tp_average_pool2d_s8(const tp_pool_params_t *p, const tp_shape4_t *in_shape,
                          const int8_t *in, const tp_shape4_t *out_shape, int8_t *out)
{
    const int32_t in_h = in_shape->h, in_w = in_shape->w, depth = in_shape->c;
    const int32_t out_h = out_shape->h, out_w = out_shape->w;
    int32_t b, oy, ox, c, fy, fx;

    for (b = 0; b < out_shape->n; ++b) {
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t y0 = oy * p->stride_h - p->pad_h;
            const int32_t fy_start = y0 < 0 ? -y0 : 0;
            const int32_t fy_end = p->filter_h < in_h - y0 ? p->filter_h : in_h - y0;
            for (ox = 0; ox < out_w; ++ox) {
                const int32_t x0 = ox * p->stride_w - p->pad_w;
                const int32_t fx_start = x0 < 0 ? -x0 : 0;
                const int32_t fx_end = p->filter_w < in_w - x0 ? p->filter_w : in_w - x0;
                const int32_t count = (fy_end - fy_start) * (fx_end - fx_start);
                /* the window's first tap, channel 0; taps `depth` apart along a row */
                const int8_t *first = in + (((size_t)b * in_h + y0 + fy_start) * in_w + x0 +
                                            fx_start) * depth;
                int8_t *dst = out + (((size_t)b * out_h + oy) * out_w + ox) * depth;
                c = 0;
                for (; c + 4 <= depth; c += 4) { /* four channels per pass over the window */
                    int32_t acc[4] = {0, 0, 0, 0};
                    int32_t k;
                    for (fy = fy_start; fy < fy_end; ++fy) {
                        const int8_t *ip = first + (size_t)(fy - fy_start) * in_w * depth + c;
                        for (fx = fx_start; fx < fx_end; ++fx) {
                            acc[0] += ip[0];
                            acc[1] += ip[1];
                            acc[2] += ip[2];
                            acc[3] += ip[3];
                            ip += depth;
                        }
                    }
                    for (k = 0; k < 4; ++k) {
                        dst[c + k] = pool_average(p, acc[k], count);
                    }
                }
                for (; c < depth; ++c) {
                    int32_t acc = 0;
                    for (fy = fy_start; fy < fy_end; ++fy) {
                        const int8_t *ip = first + (size_t)(fy - fy_start) * in_w * depth + c;
                        for (fx = fx_start; fx < fx_end; ++fx) {
                            acc += *ip;
                            ip += depth;
                        }
                    }
                    dst[c] = pool_average(p, acc, count);
                }
            }
        }
    }
}

/* ---- ADD ---------------------------------------------------------------------------------- */

/*
 * TFLite's quantised AddFunc: each input (plus its offset) is shifted left by left_shift (20),
 * scaled by its multiplier with MultiplyByQuantizedMultiplierSmallerThanOneExp (high multiply,
 * then a rounding right shift by -shift), the sum is scaled the same way by the output
 * multiplier, offset by the output zero point and clamped.
 */
static inline int8_t add_one(const tp_add_params_t *p, int8_t x, int8_t y)
{
    const int32_t a = shl_wrap(p->input1_offset + x, p->left_shift);
    const int32_t b = shl_wrap(p->input2_offset + y, p->left_shift);
    const int32_t sa = rdbpot(srdhm_q31(a, p->input1_multiplier), -p->input1_shift);
    const int32_t sb = rdbpot(srdhm_q31(b, p->input2_multiplier), -p->input2_shift);
    const int32_t raw = rdbpot(srdhm_q31(sa + sb, p->output_multiplier), -p->output_shift) +
                        p->output_offset;
    return (int8_t)clamp(raw, p->act_min, p->act_max);
}

void tp_add_s8(const tp_add_params_t *p, size_t size, const int8_t *in1, const int8_t *in2,
               int8_t *out)
{
    const tp_add_params_t q = *p; /* a local copy: the int8 stores cannot alias it */
    size_t i;
    for (i = 0; i < size; ++i) {
        out[i] = add_one(&q, in1[i], in2[i]);
    }
}

/* TFLite's BroadcastAdd: the same AddFunc, walking the output with per-input strides. */
void tp_add_broadcast_s8(const tp_add_params_t *p, const tp_broadcast_t *b, const int8_t *in1,
                         const int8_t *in2, int8_t *out)
{
    int32_t index[TP_MAX_DIMS];
    size_t total = 1, n, off1 = 0, off2 = 0;
    int32_t d;

    for (d = 0; d < b->ndim; ++d) {
        index[d] = 0;
        total *= (size_t)b->dims[d];
    }
    for (n = 0; n < total; ++n) {
        out[n] = add_one(p, in1[off1], in2[off2]);
        for (d = b->ndim - 1; d >= 0; --d) { /* odometer step, last axis fastest */
            ++index[d];
            off1 += (size_t)b->stride1[d];
            off2 += (size_t)b->stride2[d];
            if (index[d] < b->dims[d]) {
                break;
            }
            off1 -= (size_t)b->stride1[d] * (size_t)b->dims[d];
            off2 -= (size_t)b->stride2[d] * (size_t)b->dims[d];
            index[d] = 0;
        }
    }
}

/* ---- SOFTMAX ------------------------------------------------------------------------------ */

/*
 * gemmlowp exp_on_interval_between_negative_one_quarter_and_0_excl: Taylor expansion of exp
 * around -1/8, all values Q0.31. 1895147668 = exp(-1/8), 715827883 = 1/3.
 */
static int32_t exp_on_quarter_interval(int32_t a)
{
    const int32_t x = a + ((int32_t)1 << 28); /* a + 1/8 */
    const int32_t x2 = srdhm(x, x);
    const int32_t x3 = srdhm(x2, x);
    const int32_t x4 = srdhm(x2, x2);
    const int32_t x4_over_4 = rdbpot(x4, 2);
    const int32_t poly = rdbpot(srdhm(x4_over_4 + x3, 715827883) + x2, 1);
    return 1895147668 + srdhm(1895147668, x + poly); /* exp(-1/8) * (1 + x + x^2/2 + ...) */
}

/*
 * gemmlowp exp_on_negative_values for a Q5.26 input a <= 0, result Q0.31: exp of a mod 1/4 on
 * the interval above, then one multiplication by exp(-2^k) per set bit of the remainder
 * (the barrel shifter, k = -2 .. 4), and exp(0) = the largest Q0.31 value.
 */
static int32_t exp_on_negative_values(int32_t a)
{
    static const int32_t multipliers[7] = {
        1672461947, /* exp(-1/4) */
        1302514674, /* exp(-1/2) */
        790015084,  /* exp(-1) */
        290630308,  /* exp(-2) */
        39332535,   /* exp(-4) */
        720401,     /* exp(-8) */
        242,        /* exp(-16) */
    };
    const int32_t quarter = (int32_t)1 << 24;
    const int32_t a_mod_quarter_minus_quarter = (a & (quarter - 1)) - quarter;
    /* Rescale Q5.26 -> Q0.31: a saturating multiply by 2^5. */
    int32_t result = exp_on_quarter_interval(sat_shl(a_mod_quarter_minus_quarter, 5));
    const int32_t remainder = a_mod_quarter_minus_quarter - a;
    int32_t k;
    for (k = 0; k < 7; ++k) {
        if (remainder & ((int32_t)1 << (24 + k))) {
            result = srdhm(result, multipliers[k]);
        }
    }
    return a == 0 ? TP_INT32_MAX : result;
}

/* gemmlowp RoundingHalfSum: (a + b) / 2 rounded half away from zero, in 64 bits. */
static int32_t rounding_half_sum(int32_t a, int32_t b)
{
    const int64_t sum = (int64_t)a + (int64_t)b;
    return (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
}

/*
 * gemmlowp one_over_one_plus_x_for_x_in_0_1: Newton-Raphson division (3 iterations) in Q2.29,
 * starting from 48/17 - 32/17 * d (1515870810, -1010580540); result Q0.31.
 */
static int32_t one_over_one_plus_x(int32_t a)
{
    const int32_t half_denominator = rounding_half_sum(a, TP_INT32_MAX);
    const int32_t one_q2 = (int32_t)1 << 29;
    int32_t x = 1515870810 + srdhm(half_denominator, -1010580540);
    int32_t i;
    for (i = 0; i < 3; ++i) {
        const int32_t one_minus_dx = one_q2 - srdhm(half_denominator, x);
        x = x + sat_shl(srdhm(x, one_minus_dx), 2); /* Rescale Q4.27 -> Q2.29 */
    }
    return sat_shl(x, 1); /* ExactMulByPot<-1> then Rescale Q1.30 -> Q0.31 */
}

static int32_t count_leading_zeros(uint32_t x)
{
    int32_t n = 0;
    while (n < 32 && !(x & 0x80000000u)) {
        x <<= 1;
        ++n;
    }
    return n;
}

/*
 * TFLite's quantised reference Softmax (int8 -> int8): differences from the row maximum at or
 * above diff_min are scaled to Q5.26 by MultiplyByQuantizedMultiplierGreaterThanOne, exp'd in
 * fixed point, summed in Q12.19; the reciprocal of the sum (GetReciprocal) scales each exp,
 * and the product is rounded down to 8 bits and shifted by -128. Differences below diff_min
 * give -128. Rows of 4096 or more overflow TFLite's Q12.19 sum; we keep its arithmetic.
 */
void tp_softmax_s8(const tp_softmax_params_t *p, int32_t outer_size, int32_t depth,
                   const int8_t *in, int8_t *out)
{
    int32_t i, c;
    for (i = 0; i < outer_size; ++i) {
        const int8_t *row = in + (size_t)i * depth;
        int8_t *orow = out + (size_t)i * depth;
        int32_t max_in_row = -128;
        int32_t sum_of_exps = 0;
        int32_t headroom_plus_one, num_bits_over_unit, shifted_scale, out_shift;

        for (c = 0; c < depth; ++c) {
            max_in_row = row[c] > max_in_row ? row[c] : max_in_row;
        }
        for (c = 0; c < depth; ++c) {
            const int32_t diff = (int32_t)row[c] - max_in_row;
            if (diff >= p->diff_min) {
                const int32_t scaled = srdhm(shl_wrap(diff, p->input_left_shift),
                                             p->input_multiplier);
                /* Rescale Q0.31 -> Q12.19: a rounding divide by 2^12. */
                sum_of_exps += rdbpot(exp_on_negative_values(scaled), 12);
            }
        }
        /* GetReciprocal(sum, 12 integer bits). */
        headroom_plus_one = count_leading_zeros((uint32_t)sum_of_exps);
        num_bits_over_unit = 12 - headroom_plus_one;
        shifted_scale = one_over_one_plus_x(
            (int32_t)(((uint32_t)sum_of_exps << headroom_plus_one) - 0x80000000u));
        out_shift = num_bits_over_unit + 31 - 8;

        for (c = 0; c < depth; ++c) {
            const int32_t diff = (int32_t)row[c] - max_in_row;
            /* A sum of exps of 512 or more needs a shift past 31, where TFLite aborts; every
               probability is then below half a step of 1/256, which rounds to 0 (-128). */
            if (diff >= p->diff_min && out_shift <= 31) {
                const int32_t scaled = srdhm(shl_wrap(diff, p->input_left_shift),
                                             p->input_multiplier);
                const int32_t e = exp_on_negative_values(scaled);
                const int32_t unsat = rdbpot(srdhm(shifted_scale, e), out_shift);
                orow[c] = (int8_t)clamp(unsat - 128, -128, 127);
            } else {
                orow[c] = -128;
            }
        }
    }
}

/* ---- RESHAPE, QUANTIZE, DEQUANTIZE -------------------------------------------------------- */

/* A copy with memmove's overlap rule (by words when it can), so the kernels need no libc. */
void tp_reshape(const void *in, void *out, size_t bytes)
{
    const unsigned char *src = (const unsigned char *)in;
    unsigned char *dst = (unsigned char *)out;
    size_t i;
    if ((((uintptr_t)src | (uintptr_t)dst | bytes) & 3u) == 0 &&
        (dst + bytes <= src || src + bytes <= dst)) { /* apart and aligned: by words */
        for (i = 0; i < bytes; i += 4) {
            uint32_t word;
            __builtin_memcpy(&word, src + i, 4); /* one LDR, one STR */
            __builtin_memcpy(dst + i, &word, 4);
        }
        return;
    }
    if (dst < src) {
        for (i = 0; i < bytes; ++i) {
            dst[i] = src[i];
        }
    } else if (dst > src) {
        for (i = bytes; i > 0; --i) {
            dst[i - 1] = src[i - 1];
        }
    }
}

/* TFLite Requantize (int8 -> int8): MultiplyByQuantizedMultiplier(x - zp_in) + zp_out, saturated. */
void tp_requantize_s8(int32_t input_zero_point, int32_t multiplier, int32_t shift,
                      int32_t output_zero_point, size_t size, const int8_t *in, int8_t *out)
{
    size_t i;
    for (i = 0; i < size; ++i) {
        const int32_t v = mbqm((int32_t)in[i] - input_zero_point, multiplier, shift);
        out[i] = (int8_t)clamp(v + output_zero_point, -128, 127);
    }
}

/*
 * TfLiteRound for floats (std::round): nearest integer, halves away from zero. The fractional
 * part x - trunc(x) is exact in float, so the comparison with 0.5 is too. Magnitudes are capped
 * at 2^30 first (the callers saturate to int8 anyway) so the conversion is always defined.
 */
static int32_t round_half_away(float x)
{
    int32_t t;
    float frac;
    if (!(x < 1073741824.0f)) { /* also catches NaN, which TFLite leaves undefined */
        return (int32_t)1 << 30;
    }
    if (x < -1073741824.0f) {
        return -((int32_t)1 << 30);
    }
    t = (int32_t)x;
    frac = x - (float)t;
    if (frac >= 0.5f) {
        ++t;
    } else if (frac <= -0.5f) {
        --t;
    }
    return t;
}

/* TFLite AffineQuantize (float -> int8): round(x / scale) in float, plus zero point, saturated. */
void tp_quantize_f32_s8(float scale, int32_t zero_point, size_t size, const float *in,
                        int8_t *out)
{
    size_t i;
    for (i = 0; i < size; ++i) {
        out[i] = (int8_t)clamp(round_half_away(in[i] / scale) + zero_point, -128, 127);
    }
}

/*
 * TFLite Dequantize (int8 -> float): float(double(scale) * (x - zp)). The product of a float
 * and an integer of at most 9 bits is exact in double, so one float multiply rounds it the same.
 */
void tp_dequantize_s8_f32(float scale, int32_t zero_point, size_t size, const int8_t *in,
                          float *out)
{
    size_t i;
    for (i = 0; i < size; ++i) {
        out[i] = scale * (float)((int32_t)in[i] - zero_point);
    }
}
