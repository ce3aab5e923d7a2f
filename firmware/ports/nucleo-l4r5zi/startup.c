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
    [0] = (cm_vector_t)(uintptr_t)&_estack,
    [1] = Reset_Handler,
    [2] = NMI_Handler,
    [3] = HardFault_Handler,
    [4] = MemManage_Handler,
    [5] = BusFault_Handler,
    [6] = UsageFault_Handler,
    [11] = Default_Handler, /* SVCall */
    [12] = Default_Handler, /* DebugMonitor */
    [14] = Default_Handler, /* PendSV */
    [15] = Default_Handler, /* SysTick */
    /* GNU range designators (not overlapping: -Woverride-init would object) */
    [16 ... 16 + IRQ_LPUART1 - 1] = Default_Handler,
    [16 + IRQ_LPUART1] = LPUART1_IRQHandler,
    [16 + IRQ_LPUART1 + 1 ... 16 + IRQ_COUNT - 1] = Default_Handler,
};
