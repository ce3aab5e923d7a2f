/*
 * th_format: the numbers the harness prints, formatted exactly as the host reference does.
 *
 * The host decides whether the DUT agrees with it by comparing the printed text of
 * `m-results-[...]`, so every value must come out as Python's f"{v:.3f}" of the same float64:
 * the exact binary value rounded half-to-even to 3 decimals, "-0.000" for a negative value
 * that rounds to zero, "inf"/"nan" as Python spells them. Formatting is done on the exact
 * integer significand and binary exponent, so it needs no printf and no floating point unit.
 * Freestanding C99 (only <stdint.h>, <stddef.h>), so the host tests compile the same file.
 */
#ifndef TH_FORMAT_H
#define TH_FORMAT_H

#include <stddef.h>
#include <stdint.h>

/* Longest text th_format_fixed3 writes, with its NUL ("-" + 309 digits + ".000"). */
#define TH_FIXED3_MAX 320

/* Writes num * 2^exp2 with 3 decimals (|num| < 2^53); returns the length, NUL excluded. */
size_t th_format_scaled3(char *out, int64_t num, int32_t exp2);

/* Writes a double as Python's f"{v:.3f}". */
size_t th_format_fixed3(char *out, double v);

/* Writes (q - zero_point) * scale as Python's f"{(q - zp) * float(scale):.3f}": the product
 * of a small integer and a float32 scale is exact in float64, so no rounding happens first. */
size_t th_format_dequant3(char *out, int32_t q, int32_t zero_point, float scale);

/* Writes an unsigned decimal number; returns the length. */
size_t th_format_u32(char *out, uint32_t v);

#endif /* TH_FORMAT_H */
