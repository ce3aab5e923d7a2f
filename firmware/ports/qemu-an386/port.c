/*
 * th_port for the Arm MPS2 AN386 (Cortex-M4F) as QEMU emulates it (-M mps2-an386).
 *
 * UART0 (-serial #1) carries the protocol: its receive interrupt clears INTCLEAR *before*
 * draining DATA (the other order loses a byte that arrives during the drain and stalls
 * reception for good, shared/reference/emulation.md §4.1) and pushes into a ring; when the
 * ring is full it leaves the byte in DATA and masks the interrupt, so QEMU holds the rest
 * back instead of anything being lost. TIMER0 runs free at 25 MHz (the microsecond clock,
 * extended to 64 bits in software). The MPS2's GPIO is not emulated, so the timestamp pin is
 * FPGAIO LED0 (visible with -trace led_set_intensity) and, what the host uses, a line on
 * UART1 (-serial #2), the event line:
 *
 *     P<level> <ticks>\n    timestamp pin driven to level (0 = the falling edge)
 *     S<state> <ticks>\n    activity: 0 idle, 1 receiving an input, 2 running inferences
 *     T <ticks>\n           heartbeat, every 100 ms of firmware time (TIMER1 interrupt)
 *
 * <ticks> is TIMER0's elapsed count modulo 2^32 in decimal (25 MHz, wraps every 171.8 s;
 * heartbeats let the reader unwrap it). Each line is read and sent with interrupts masked,
 * so lines leave in time order. A fault prints an e-[...] line on UART0 and ends QEMU
 * through semihosting with a non-zero status.
 */
#include <stdint.h>

#include "cortex_m.h"
#include "th_format.h"
#include "th_port.h"

typedef struct {
    volatile uint32_t DATA, STATE, CTRL, INTSTATUS, BAUDDIV;
} cmsdk_uart_t;

typedef struct {
    volatile uint32_t CTRL, VALUE, RELOAD, INTSTATUS;
} cmsdk_timer_t;

#define UART0 ((cmsdk_uart_t *)0x40004000u)
#define UART1 ((cmsdk_uart_t *)0x40005000u)
#define TIMER0 ((cmsdk_timer_t *)0x40000000u)
#define TIMER1 ((cmsdk_timer_t *)0x40001000u)
#define FPGAIO_LED (*(volatile uint32_t *)0x40028000u)
#define NVIC_ISER0 (*(volatile uint32_t *)0xE000E100u)
#define NVIC_ISPR0 (*(volatile uint32_t *)0xE000E200u)

#define UART_STATE_TXFULL 1u
#define UART_STATE_RXFULL 2u
#define UART_CTRL_TXEN 1u
#define UART_CTRL_RXEN 2u
#define UART_CTRL_RXINTEN 8u
#define UART_INT_RX 2u
#define UART_BAUDDIV 16u /* QEMU ignores the rate but wants >= 16 */
#define TIMER_CTRL_EN 1u
#define TIMER_CTRL_IRQEN 8u
#define IRQ_UART0RX 0u
#define IRQ_TIMER1 9u

#define TICK_HZ 25000000u /* PCLK */
#define TICKS_PER_US (TICK_HZ / 1000000u)
#define HEARTBEAT_TICKS (TICK_HZ / 10u)

#define SEMIHOSTING_SYS_EXIT 0x18u
#define ADP_STOPPED_RUNTIME_ERROR 0x20023u

static uint32_t g_last_raw;         /* TIMER0 elapsed count at the last read */
static uint64_t g_ticks;            /* ... extended to 64 bits */

/* Elapsed TIMER0 ticks since boot; call with interrupts masked. */
static uint64_t ticks_locked(void) {
    uint32_t raw = ~TIMER0->VALUE; /* counts down from 0xFFFFFFFF */
    g_ticks += (uint32_t)(raw - g_last_raw);
    g_last_raw = raw;
    return g_ticks;
}

static uint64_t ticks(void) {
    uint32_t primask = cm_irq_save();
    uint64_t t = ticks_locked();
    cm_irq_restore(primask);
    return t;
}

static void uart_putc(cmsdk_uart_t *uart, char c) {
    while (uart->STATE & UART_STATE_TXFULL) {
    }
    uart->DATA = (uint8_t)c;
}

static void uart_puts(cmsdk_uart_t *uart, const char *text) {
    while (*text) {
        uart_putc(uart, *text++);
    }
}

/* One event-line record: `<tag> <ticks>\n`. */
static void event(const char *tag) {
    char text[16];
    size_t len = 0;
    while (*tag) {
        text[len++] = *tag++;
    }
    text[len++] = ' ';
    uint32_t primask = cm_irq_save();
    len += th_format_u32(text + len, (uint32_t)ticks_locked());
    text[len++] = '\n';
    for (size_t i = 0; i < len; i++) {
        uart_putc(UART1, text[i]);
    }
    cm_irq_restore(primask);
}

void th_port_init(void) {
    TIMER0->CTRL = 0;
    TIMER0->RELOAD = 0xFFFFFFFFu;
    TIMER0->VALUE = 0xFFFFFFFFu;
    TIMER0->CTRL = TIMER_CTRL_EN;
    UART1->BAUDDIV = UART_BAUDDIV;
    UART1->CTRL = UART_CTRL_TXEN;
    TIMER1->CTRL = 0;
    TIMER1->RELOAD = HEARTBEAT_TICKS - 1u;
    TIMER1->VALUE = HEARTBEAT_TICKS - 1u;
    TIMER1->CTRL = TIMER_CTRL_EN | TIMER_CTRL_IRQEN;
    FPGAIO_LED = 1u; /* the pin idles high */
    UART0->BAUDDIV = UART_BAUDDIV;
    NVIC_ISER0 = (1u << IRQ_UART0RX) | (1u << IRQ_TIMER1);
    /* Transmit, receive and its interrupt in one write, with the NVIC already enabled. */
    UART0->CTRL = UART_CTRL_TXEN | UART_CTRL_RXEN | UART_CTRL_RXINTEN;
    event("S0");
}

const char *th_port_name(void) {
    return "tinypower-qemu-an386";
}

void th_serial_write(const char *data, size_t len) {
    for (size_t i = 0; i < len; i++) {
        uart_putc(UART0, data[i]);
    }
}

void UART0RX_Handler(void) {
    UART0->INTSTATUS = UART_INT_RX; /* clear first, then drain (emulation.md §4.1) */
    while (UART0->STATE & UART_STATE_RXFULL) {
        if (cm_rx_full()) {
            UART0->CTRL = UART_CTRL_TXEN | UART_CTRL_RXEN; /* full: QEMU holds the rest */
            return;
        }
        cm_rx_push((uint8_t)UART0->DATA);
    }
}

int th_serial_read(void) {
    int c = cm_rx_pop();
    if (c >= 0 && !(UART0->CTRL & UART_CTRL_RXINTEN)) {
        /* The ring was full: take the waiting byte in the interrupt, and the rest after it. */
        UART0->CTRL = UART_CTRL_TXEN | UART_CTRL_RXEN | UART_CTRL_RXINTEN;
        NVIC_ISPR0 = 1u << IRQ_UART0RX;
    }
    return c;
}

uint32_t th_time_us(void) {
    return (uint32_t)(ticks() / TICKS_PER_US);
}

void th_delay_us(uint32_t us) {
    uint64_t start = ticks();
    while (ticks() - start < (uint64_t)us * TICKS_PER_US) {
    }
}

void th_pin_write(int high) {
    FPGAIO_LED = high ? 1u : 0u;
    event(high ? "P1" : "P0");
}

void th_state(th_state_t state) {
    static const char *const tags[] = {"S0", "S1", "S2"};
    event(tags[state]);
}

void TIMER1_Handler(void) {
    TIMER1->INTSTATUS = 1u;
    event("T");
}

__attribute__((noreturn)) void th_port_fault(const char *what) {
    char message[CM_FAULT_MESSAGE_BYTES];
    cm_irq_save();
    cm_fault_message(message, what);
    uart_puts(UART0, message);
    register uint32_t r0 __asm("r0") = SEMIHOSTING_SYS_EXIT;
    register uint32_t r1 __asm("r1") = ADP_STOPPED_RUNTIME_ERROR;
    __asm volatile("bkpt 0xab" ::"r"(r0), "r"(r1) : "memory");
    for (;;) {
    }
}
