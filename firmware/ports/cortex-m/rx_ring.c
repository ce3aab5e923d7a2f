/*
 * The protocol UART's receive ring, shared by every port: a single-producer (the receive
 * interrupt), single-consumer (the harness's main loop) ring of 256 bytes. Head and tail count
 * bytes without wrapping at the ring size, so full and empty differ without a spare slot.
 */
#include "cortex_m.h"
#include "th_port.h"

#define RX_RING_BYTES 256u /* a power of two: the counters wrap cleanly */

static volatile uint8_t g_rx[RX_RING_BYTES];
static volatile uint32_t g_rx_head; /* written by the interrupt */
static volatile uint32_t g_rx_tail; /* written by the main loop */

int cm_rx_full(void) {
    return g_rx_head - g_rx_tail == RX_RING_BYTES;
}

void cm_rx_push(uint8_t c) {
    g_rx[g_rx_head % RX_RING_BYTES] = c;
    g_rx_head++;
}

int cm_rx_pop(void) {
    if (g_rx_tail == g_rx_head) {
        return -1;
    }
    uint8_t c = g_rx[g_rx_tail % RX_RING_BYTES];
    g_rx_tail++;
    return c;
}

void th_wait_for_input(void) {
    /* Masked, an interrupt still ends WFI: no byte can slip in between check and sleep. */
    uint32_t primask = cm_irq_save();
    if (g_rx_tail == g_rx_head) {
        __asm volatile("dsb\n\twfi" ::: "memory");
    }
    cm_irq_restore(primask);
}
