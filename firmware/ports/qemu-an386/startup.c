/*
 * Startup for the Arm MPS2 AN386 (Cortex-M4F) under QEMU: the vector table (16 core entries
 * and the 32 external interrupts of the MPS2 FPGA image), and the reset handler that enables
 * the FPU, copies .data, zeroes .bss and calls main. No SDK: register facts from QEMU's
 * hw/arm/mps2.c and shared/reference/emulation.md §2.
 */
#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;

int main(void);
void Reset_Handler(void);
void th_port_fault(const char *what); /* port.c: report and exit through semihosting */
void UART0RX_Handler(void);           /* port.c */
void TIMER1_Handler(void);            /* port.c */

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

void Reset_Handler(void) {
    SCB_CPACR |= 0xFu << 20; /* CP10 and CP11 full access, before any float instruction */
    __asm volatile("dsb\n\tisb" ::: "memory");
    for (uint32_t *src = &_sidata, *dst = &_sdata; dst < &_edata;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = &_sbss; dst < &_ebss;) {
        *dst++ = 0;
    }
    main();
    th_port_fault("main returned");
}

static void NMI_Handler(void) { th_port_fault("NMI"); }
static void HardFault_Handler(void) { th_port_fault("HardFault"); }
static void MemManage_Handler(void) { th_port_fault("MemManage"); }
static void BusFault_Handler(void) { th_port_fault("BusFault"); }
static void UsageFault_Handler(void) { th_port_fault("UsageFault"); }
static void Default_Handler(void) { th_port_fault("unexpected interrupt"); }

typedef void (*vector_t)(void);

__attribute__((section(".isr_vector"), used)) static const vector_t g_vectors[16 + 32] = {
    (vector_t)(uintptr_t)&_estack,
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
