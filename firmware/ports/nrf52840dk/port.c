/*
 * th_port for the Nordic nRF52840 DK (PCA10056; nRF52840, Cortex-M4F at 64 MHz), at register
 * level (no SDK). Register facts are from Nordic's nRF52840 Product Specification; where a
 * detail is from memory rather than checked against it, the comment says so. Not yet run on
 * hardware: built in CI only.
 *
 * Clocks: the 64 MHz HFXO is started so the UART's baud and the timer are crystal-accurate
 * (the internal HFINT is only about 1 %). The CPU runs at 64 MHz from reset either way.
 *
 * Protocol UART: the legacy UART0 (not UARTE: no EasyDMA, byte by byte) on P0.06 TX / P0.08
 * RX, the pins the DK's interface MCU (J-Link OB) carries to its USB virtual COM port.
 * 8N1, no flow control; the baud is TH_UART_BAUD, passed at build time by host/firmware.py
 * from the board file's [uart] table (115200 or 9600).
 *
 * Microsecond clock: TIMER1 in 32-bit timer mode at 16 MHz / 2^4 = 1 MHz, read by capture.
 * Timestamp pin: P1.08, Arduino D7 on the DK's header, idle high.
 */
#include <stdint.h>

#include "cortex_m.h"
#include "th_port.h"

#ifndef TH_UART_BAUD
#define TH_UART_BAUD 115200u
#endif

#define REG(base, offset) (*(volatile uint32_t *)((base) + (offset)))

/* CLOCK */
#define CLOCK 0x40000000u
#define CLOCK_TASKS_HFCLKSTART REG(CLOCK, 0x000)
#define CLOCK_EVENTS_HFCLKSTARTED REG(CLOCK, 0x100)

/* NVMC: instruction cache (from memory: ICACHECNF at 0x540, CACHEEN bit 0; off at reset) */
#define NVMC_ICACHECNF REG(0x4001E000u, 0x540)
#define NVMC_ICACHECNF_CACHEEN 1u

/* UART0 */
#define UART0 0x40002000u
#define UART_TASKS_STARTRX REG(UART0, 0x000)
#define UART_TASKS_STARTTX REG(UART0, 0x008)
#define UART_EVENTS_RXDRDY REG(UART0, 0x108)
#define UART_EVENTS_TXDRDY REG(UART0, 0x11C)
#define UART_EVENTS_ERROR REG(UART0, 0x124)
#define UART_INTENSET REG(UART0, 0x304)
#define UART_ERRORSRC REG(UART0, 0x480)
#define UART_ENABLE REG(UART0, 0x500)
#define UART_PSEL_TXD REG(UART0, 0x50C)
#define UART_PSEL_RXD REG(UART0, 0x514)
#define UART_RXD REG(UART0, 0x518)
#define UART_TXD REG(UART0, 0x51C)
#define UART_BAUDRATE REG(UART0, 0x524)
#define UART_CONFIG REG(UART0, 0x56C)
#define UART_ENABLE_UART 4u
#define UART_INT_RXDRDY (1u << 2)
#define IRQ_UART0 2u
#define NVIC_ISER0 (*(volatile uint32_t *)0xE000E100u)

/* The BAUDRATE register's values (the Product Specification's table: not 2^32 * baud / 16 MHz,
 * which it only approximates, so only the listed rates are accepted). */
#if TH_UART_BAUD == 115200
#define UART_BAUDRATE_VALUE 0x01D7E000u
#elif TH_UART_BAUD == 9600
#define UART_BAUDRATE_VALUE 0x00275000u
#else
#error "TH_UART_BAUD: this port knows the nRF52840 UART's register values for 115200 and 9600"
#endif

/* PSEL: bits 4:0 pin, bit 5 port, bit 31 clear = connected. */
#define PSEL(port, pin) (((uint32_t)(port) << 5) | (uint32_t)(pin))
#define PIN_TX PSEL(0, 6) /* P0.06 */
#define PIN_RX PSEL(0, 8) /* P0.08 */

/* TIMER1 */
#define TIMER1 0x40009000u
#define TIMER_TASKS_START REG(TIMER1, 0x000)
#define TIMER_TASKS_CAPTURE0 REG(TIMER1, 0x040)
#define TIMER_MODE REG(TIMER1, 0x504)
#define TIMER_BITMODE REG(TIMER1, 0x508)
#define TIMER_PRESCALER REG(TIMER1, 0x510)
#define TIMER_CC0 REG(TIMER1, 0x540)
#define TIMER_MODE_TIMER 0u
#define TIMER_BITMODE_32 3u
#define TIMER_PRESCALER_1MHZ 4u /* 16 MHz / 2^4 */

/* GPIO P1 */
#define P1 0x50000300u
#define P1_OUTSET REG(P1, 0x508)
#define P1_OUTCLR REG(P1, 0x50C)
#define P1_PIN_CNF(n) REG(P1, 0x700 + 4u * (n))
#define PIN_TIMESTAMP 8u /* P1.08 */
#define PIN_CNF_OUTPUT 3u /* DIR output, input buffer disconnected, no pull, S0S1 drive */



void th_port_init(void) {
    NVMC_ICACHECNF = NVMC_ICACHECNF_CACHEEN;
    CLOCK_EVENTS_HFCLKSTARTED = 0;
    CLOCK_TASKS_HFCLKSTART = 1;
    while (!CLOCK_EVENTS_HFCLKSTARTED) {
    }
    CLOCK_EVENTS_HFCLKSTARTED = 0;

    /* Timestamp pin: high before it becomes an output, so it never glitches low. */
    P1_OUTSET = 1u << PIN_TIMESTAMP;
    P1_PIN_CNF(PIN_TIMESTAMP) = PIN_CNF_OUTPUT;

    TIMER_MODE = TIMER_MODE_TIMER;
    TIMER_BITMODE = TIMER_BITMODE_32;
    TIMER_PRESCALER = TIMER_PRESCALER_1MHZ;
    TIMER_TASKS_START = 1;

    UART_PSEL_TXD = PIN_TX;
    UART_PSEL_RXD = PIN_RX;
    UART_BAUDRATE = UART_BAUDRATE_VALUE;
    UART_CONFIG = 0; /* no hardware flow control, no parity, one stop bit */
    UART_ENABLE = UART_ENABLE_UART;
    UART_EVENTS_TXDRDY = 0;
    UART_EVENTS_RXDRDY = 0;
    UART_INTENSET = UART_INT_RXDRDY;
    NVIC_ISER0 = 1u << IRQ_UART0;
    UART_TASKS_STARTTX = 1;
    UART_TASKS_STARTRX = 1;
}

const char *th_port_name(void) {
    return "tinypower-nrf52840dk";
}

void th_serial_write(const char *data, size_t len) {
    for (size_t i = 0; i < len; i++) {
        UART_TXD = (uint8_t)data[i];
        while (!UART_EVENTS_TXDRDY) {
        }
        UART_EVENTS_TXDRDY = 0;
    }
}

void UART0_IRQHandler(void) {
    if (UART_EVENTS_ERROR) { /* overrun, framing, parity or break: clear and carry on */
        UART_EVENTS_ERROR = 0;
        UART_ERRORSRC = UART_ERRORSRC; /* write 1 to clear the bits that are set */
    }
    while (UART_EVENTS_RXDRDY) {
        UART_EVENTS_RXDRDY = 0; /* clear the event before reading RXD (the PS's order) */
        uint8_t c = (uint8_t)UART_RXD;
        if (!cm_rx_full()) { /* full: dropped (no flow control) */
            cm_rx_push(c);
        }
    }
    (void)UART_EVENTS_RXDRDY; /* read back so the clear lands before the handler returns */
}

int th_serial_read(void) {
    return cm_rx_pop();
}

uint32_t th_time_us(void) {
    uint32_t primask = cm_irq_save(); /* capture and read as one */
    TIMER_TASKS_CAPTURE0 = 1;
    uint32_t now = TIMER_CC0;
    cm_irq_restore(primask);
    return now;
}

void th_delay_us(uint32_t us) {
    uint32_t start = th_time_us();
    while (th_time_us() - start <= us) { /* <=: at least `us` whole microseconds */
    }
}

void th_pin_write(int high) {
    if (high) {
        P1_OUTSET = 1u << PIN_TIMESTAMP;
    } else {
        P1_OUTCLR = 1u << PIN_TIMESTAMP;
    }
}

void th_state(th_state_t state) {
    (void)state; /* a real board's current is measured, not modelled */
}

__attribute__((noreturn)) void th_port_fault(const char *what) {
    char message[CM_FAULT_MESSAGE_BYTES];
    cm_irq_save();
    th_serial_write(message, cm_fault_message(message, what));
    for (;;) { /* halted for a debugger; reset (or reflash) to recover */
    }
}
