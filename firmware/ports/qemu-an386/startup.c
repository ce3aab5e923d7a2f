/*
 * Vector table for the Arm MPS2 AN386 (Cortex-M4F) under QEMU: 16 core entries and the 32
 * external interrupts of the MPS2 FPGA image (QEMU's hw/arm/mps2.c, shared/reference/
 * emulation.md §2). Reset and fault handling are the shared ports/cortex-m/reset.c.
 */
#include "cortex_m.h"

void UART0RX_Handler(void); /* port.c */
void TIMER1_Handler(void);  /* port.c */

#define IRQ_COUNT 32
#define IRQ_UART0RX 0
#define IRQ_TIMER1 9

__attribute__((section(".isr_vector"), used)) const cm_vector_t cm_vectors[16 + IRQ_COUNT] = {
    CM_CORE_VECTORS,
    [16 + IRQ_UART0RX] = UART0RX_Handler,
    [16 + IRQ_UART0RX + 1 ... 16 + IRQ_TIMER1 - 1] = Default_Handler,
    [16 + IRQ_TIMER1] = TIMER1_Handler,
    [16 + IRQ_TIMER1 + 1 ... 16 + IRQ_COUNT - 1] = Default_Handler,
};
