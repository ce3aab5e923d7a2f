/*
 * bench_main.c: the firmware benchmark's program for QEMU mps2-an386 (benchmarks/bench_firmware.py).
 *
 * One image runs one model through one set of kernels (ours, or CMSIS-NN's for the anchor),
 * both behind the same four functions of bench_model.h, on the qemu-an386 port. Under
 * `-icount shift=N` TIMER0 (25 MHz, counting down) advances by one tick per 40 / 2^N
 * instructions, so the timer read after each operator (TP_PROFILE_OP, bench_profile.h) gives
 * every layer's instruction count. Interrupts are masked while a model runs, so the port's
 * heartbeat does not land inside a layer.
 *
 * Output on UART0, one line each:
 *   scratch <bytes>               the kernels' scratch buffer beyond the arena (CMSIS-NN's)
 *   start <ticks>                 TIMER0 before the first inference
 *   marks <t0> <t1> ...           TIMER0 after each operator of the first inference
 *   out <hex>                     each input's output bytes (two hex digits per int8)
 *   done
 * then QEMU exits through semihosting.
 */
#include <stddef.h>
#include <stdint.h>

#include "bench_model.h"
#include "bench_profile.h"
#include "cortex_m.h"
#include "th_port.h"

uint32_t bench_marks[BENCH_OPS];

static void put(const char *text)
{
    size_t n = 0;
    while (text[n] != '\0') {
        ++n;
    }
    th_serial_write(text, n);
}

static void put_u32(uint32_t v)
{
    char text[11];
    int i = 10;
    text[i] = '\0';
    do {
        text[--i] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0u);
    put(text + i);
}

static void put_hex(const int8_t *bytes, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char pair[2];
    size_t i;
    for (i = 0; i < n; ++i) {
        const uint8_t b = (uint8_t)bytes[i];
        pair[0] = digits[b >> 4];
        pair[1] = digits[b & 15u];
        th_serial_write(pair, 2);
    }
}

/* Semihosting SYS_EXIT with ADP_Stopped_ApplicationExit: QEMU ends with status 0. */
static void exit_qemu(void)
{
    register uint32_t op __asm__("r0") = 0x18u;
    register uint32_t arg __asm__("r1") = 0x20026u;
    __asm__ volatile("bkpt 0xab" : : "r"(op), "r"(arg) : "memory");
    for (;;) {
    }
}

int main(void)
{
    uint32_t n, scratch, start = 0, primask;
    size_t i;

    th_port_init();
    scratch = bench_setup();
    put("scratch ");
    put_u32(scratch);
    put("\n");
    for (n = 0; n < BENCH_INPUTS; ++n) {
        int8_t *input = bench_input();
        for (i = 0; i < BENCH_INPUT_BYTES; ++i) {
            input[i] = bench_inputs[n][i];
        }
        primask = cm_irq_save();
        start = BENCH_TIMER;
        bench_invoke();
        cm_irq_restore(primask);
        if (n == 0) {
            put("start ");
            put_u32(start);
            put("\nmarks");
            for (i = 0; i < BENCH_OPS; ++i) {
                put(" ");
                put_u32(bench_marks[i]);
            }
            put("\n");
        }
        put("out ");
        put_hex(bench_output(), BENCH_OUTPUT_BYTES);
        put("\n");
    }
    put("done\n");
    exit_qemu();
    return 0;
}
