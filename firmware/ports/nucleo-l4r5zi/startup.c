/*
 * Vector table for the STM32L4R5ZI: 16 core entries and its 95 external interrupts (IRQ 0-94,
 * the last being DMAMUX1 overrun, RM0432's vector table). Only LPUART1 (IRQ 70) is used.
 * Reset and fault handling are the shared ports/cortex-m/reset.c.
 */
#include "cortex_m.h"

#define IRQ_COUNT 95
#define IRQ_LPUART1 70

void LPUART1_IRQHandler(void); /* port.c */

__attribute__((section(".isr_vector"), used)) const cm_vector_t cm_vectors[16 + IRQ_COUNT] = {
    CM_CORE_VECTORS,
    [16 ... 16 + IRQ_LPUART1 - 1] = Default_Handler,
    [16 + IRQ_LPUART1] = LPUART1_IRQHandler,
    [16 + IRQ_LPUART1 + 1 ... 16 + IRQ_COUNT - 1] = Default_Handler,
};
