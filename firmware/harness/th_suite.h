/*
 * th_suite: which MLPerf Tiny benchmark this firmware is built for (a compile-time choice,
 * as in the reference: one of -DTH_SUITE_KWS01, -DTH_SUITE_VWW01, -DTH_SUITE_IC01,
 * -DTH_SUITE_AD01), and how its inputs arrive on the wire (shared/reference/
 * mlperf-tiny-protocol.md §7): the bytes `db` receives and how th_load_tensor reads them.
 */
#ifndef TH_SUITE_H
#define TH_SUITE_H

#define TH_WIRE_INT8 1    /* int8, used as-is (kws01) */
#define TH_WIRE_UINT8 2   /* uint8, minus 128 (vww01, ic01) */
#define TH_WIRE_FLOAT32 3 /* little-endian float32, quantised with the input scale (ad01) */

#if defined(TH_SUITE_KWS01)
#define TH_SUITE_NAME "kws01"
#define TH_WIRE_BYTES 490
#define TH_WIRE_TYPE TH_WIRE_INT8
#elif defined(TH_SUITE_VWW01)
#define TH_SUITE_NAME "vww01"
#define TH_WIRE_BYTES 27648
#define TH_WIRE_TYPE TH_WIRE_UINT8
#elif defined(TH_SUITE_IC01)
#define TH_SUITE_NAME "ic01"
#define TH_WIRE_BYTES 3072
#define TH_WIRE_TYPE TH_WIRE_UINT8
#elif defined(TH_SUITE_AD01)
#define TH_SUITE_NAME "ad01"
#define TH_WIRE_BYTES 2560
#define TH_WIRE_TYPE TH_WIRE_FLOAT32
#else
#error "define one of TH_SUITE_KWS01, TH_SUITE_VWW01, TH_SUITE_IC01, TH_SUITE_AD01"
#endif

#if TH_WIRE_TYPE == TH_WIRE_FLOAT32
#define TH_TENSOR_BYTES (TH_WIRE_BYTES / 4)
#else
#define TH_TENSOR_BYTES TH_WIRE_BYTES
#endif

#endif /* TH_SUITE_H */
