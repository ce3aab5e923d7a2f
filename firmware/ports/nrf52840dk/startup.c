/*
 * Vector table for the nRF52840: 16 core entries and its 48 peripheral interrupts (IRQ n is
 * the peripheral with ID n, base address 0x40000000 + n * 0x1000; the last is SPIM3, ID 47).
 * Only UART0 (ID 2, UARTE0_UART0) is used. Reset and fault handling are the shared
 * ports/cortex-m/reset.c.
 */
#include "cortex_m.h"

#define IRQ_COUNT 48
#define IRQ_UART0 2

void UART0_IRQHandler(void); /* port.c */

__attribute__((section(".isr_vector"), used)) const cm_vector_t cm_vectors[16 + IRQ_COUNT] = {
    CM_CORE_VECTORS,
    [16 ... 16 + IRQ_UART0 - 1] = Default_Handler,
    [16 + IRQ_UART0] = UART0_IRQHandler,
    [16 + IRQ_UART0 + 1 ... 16 + IRQ_COUNT - 1] = Default_Handler,
};
