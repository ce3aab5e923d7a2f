/* bench_profile.h: included (-include) into the model code the firmware benchmark builds, so
 * that the generated TP_PROFILE_OP(i) records TIMER0 after operator i (bench_main.c). */
#ifndef BENCH_PROFILE_H
#define BENCH_PROFILE_H

#include <stdint.h>

#define BENCH_TIMER (*(volatile uint32_t *)0x40000004u) /* MPS2 TIMER0 VALUE, counts down */

extern uint32_t bench_marks[];
#define TP_PROFILE_OP(index) (bench_marks[(index)] = BENCH_TIMER)

#endif
