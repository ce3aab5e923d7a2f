/*
 * Vector table for the Arm MPS2 AN386 (Cortex-M4F) under QEMU: 16 core entries and the 32
 * external interrupts of the MPS2 FPGA image (QEMU's hw/arm/mps2.c, shared/reference/
 * emulation.md §2). Reset and fault handling are the shared ports/cortex-m/reset.c.
 */
#include "cortex_m.h"

void UART0RX_Handler(void); /* port.c */
void TIMER1_Handler(void);  /* port.c */

__attribute__((section(".isr_vector"), used)) const cm_vector_t cm_vectors[16 + 32] = {
    (cm_vector_t)(uintptr_t)&_estack,
    Reset_Handler,
    NMI_Handler,
    HardFault_Handler,
    MemManage_Handler,
    BusFault_Handler,
    UsageFault_Handler,
    0, 0, 0, 0,
    Default_Handler, /* SVCall */
    Default_Handler, /* DebugMonitor */
    0,
    Default_Handler, /* PendSV */
    Default_Handler, /* SysTick */
    UART0RX_Handler, /* IRQ 0: UART0 RX */
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, /* IRQ 1-8 */
    TIMER1_Handler,  /* IRQ 9: TIMER1 */
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, /* IRQ 10-31 */
};
