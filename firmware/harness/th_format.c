/*
 * th_format: exact decimal formatting and numpy-compatible arithmetic; see th_format.h.
 */
#include "th_format.h"

#define BIG_LIMBS 34 /* 32-bit limbs: a double's integer part is below 2^1024 */

size_t th_format_u32(char *out, uint32_t v) {
    char digits[10];
    size_t n = 0, len = 0;
    do {
        digits[n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    while (n) {
        out[len++] = digits[--n];
    }
    out[len] = '\0';
    return len;
}

/* "<integer>.<3 digits>" for value = thousandths / 1000. */
static size_t put_thousandths(char *out, uint64_t thousandths) {
    uint64_t whole = thousandths / 1000u;
    uint32_t frac = (uint32_t)(thousandths % 1000u);
    char digits[20];
    size_t n = 0, len = 0;
    do {
        digits[n++] = (char)('0' + (unsigned)(whole % 10u));
        whole /= 10u;
    } while (whole);
    while (n) {
        out[len++] = digits[--n];
    }
    out[len++] = '.';
    out[len++] = (char)('0' + frac / 100u);
    out[len++] = (char)('0' + frac / 10u % 10u);
    out[len++] = (char)('0' + frac % 10u);
    out[len] = '\0';
    return len;
}

/* An integer m * 2^exp2 (exp2 >= 0) too large for 64 bits: long division by 10. */
static size_t put_big_integer(char *out, uint64_t m, int32_t exp2) {
    uint32_t limb[BIG_LIMBS] = {0};
    int32_t word = exp2 / 32, bit = exp2 % 32, top;
    char digits[BIG_LIMBS * 10];
    size_t n = 0, len = 0;
    limb[word] = (uint32_t)(m << bit); /* m < 2^53 spans at most three limbs */
    if (bit) {
        limb[word + 1] = (uint32_t)(m >> (32 - bit));
        limb[word + 2] = (uint32_t)(m >> (64 - bit));
    } else {
        limb[word + 1] = (uint32_t)(m >> 32);
    }
    top = BIG_LIMBS - 1;
    while (top > 0 && limb[top] == 0) {
        top--;
    }
    while (top > 0 || limb[0] != 0) {
        uint64_t rem = 0;
        for (int32_t i = top; i >= 0; i--) {
            uint64_t cur = (rem << 32) | limb[i];
            limb[i] = (uint32_t)(cur / 10u);
            rem = cur % 10u;
        }
        digits[n++] = (char)('0' + (unsigned)rem);
        while (top > 0 && limb[top] == 0) {
            top--;
        }
    }
    while (n) {
        out[len++] = digits[--n];
    }
    out[len++] = '.';
    out[len++] = '0';
    out[len++] = '0';
    out[len++] = '0';
    out[len] = '\0';
    return len;
}

size_t th_format_scaled3(char *out, int64_t num, int32_t exp2) {
    size_t len = 0;
    uint64_t mag = (uint64_t)(num < 0 ? -num : num);
    if (num < 0) {
        out[len++] = '-';
    }
    if (exp2 >= 0) {
        if (mag == 0 ||
            (exp2 < 64 && (mag << exp2 >> exp2) == mag && (mag << exp2) <= UINT64_MAX / 1000u)) {
            return len + put_thousandths(out + len, (mag << exp2) * 1000u);
        }
        return len + put_big_integer(out + len, mag, exp2);
    }
    /* value * 1000 = mag * 1000 / 2^k: round the quotient half to even. */
    uint32_t k = (uint32_t)(-exp2);
    uint64_t scaled = mag * 1000u; /* mag < 2^53, so this is below 2^63 */
    uint64_t q;
    if (k >= 64) {
        q = 0; /* scaled < 2^63 <= 2^(k-1): below one half */
    } else {
        uint64_t rem = scaled & ((UINT64_C(1) << k) - 1u);
        uint64_t half = UINT64_C(1) << (k - 1u);
        q = scaled >> k;
        if (rem > half || (rem == half && (q & 1u))) {
            q++;
        }
    }
    return len + put_thousandths(out + len, q);
}

size_t th_format_fixed3(char *out, double v) {
    union {
        double d;
        uint64_t u;
    } bits = {v};
    int negative = (int)(bits.u >> 63);
    int32_t biased = (int32_t)((bits.u >> 52) & 0x7FFu);
    uint64_t mant = bits.u & ((UINT64_C(1) << 52) - 1u);
    size_t len = 0;
    if (biased == 0x7FF) {
        const char *text = mant ? "nan" : (negative ? "-inf" : "inf");
        while (*text) {
            out[len++] = *text++;
        }
        out[len] = '\0';
        return len;
    }
    if (biased == 0) {
        biased = 1; /* subnormal (or zero): no implicit bit */
    } else {
        mant |= UINT64_C(1) << 52;
    }
    if (negative) {
        out[len++] = '-';
    }
    return len + th_format_scaled3(out + len, (int64_t)mant, biased - 1075);
}

size_t th_format_dequant3(char *out, int32_t q, int32_t zero_point, float scale) {
    union {
        float f;
        uint32_t u;
    } bits = {scale};
    int32_t biased = (int32_t)((bits.u >> 23) & 0xFFu);
    int64_t mant = (int64_t)(bits.u & 0x7FFFFFu);
    int64_t diff = (int64_t)q - zero_point;
    if (biased == 0xFF || (bits.u >> 31)) {
        /* inf, nan or a negative scale: let the double path spell it */
        return th_format_fixed3(out, (double)diff * (double)scale);
    }
    if (biased == 0) {
        biased = 1;
    } else {
        mant |= INT64_C(1) << 23;
    }
    return th_format_scaled3(out, diff * mant, biased - 150);
}
