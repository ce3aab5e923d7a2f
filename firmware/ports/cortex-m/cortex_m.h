/*
 * cortex_m: what every Cortex-M port shares (reset.c): the reset handler, the core exception
 * handlers that report a fault, and the fault message. Each port supplies its vector table
 * (cm_vectors, whose length is the chip's interrupt count) and th_port_fault, which sends the
 * message on the protocol UART and stops in the port's own way.
 */
#ifndef CORTEX_M_H
#define CORTEX_M_H

#include <stddef.h>
#include <stdint.h>

typedef void (*cm_vector_t)(void);

/* From the linker script: .data's load address and place, .bss, the initial stack pointer. */
extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;

/* The port's vector table (startup.c), placed at the flash origin by the linker script. */
extern const cm_vector_t cm_vectors[];

/* FPU on, VTOR = cm_vectors, .data copied, .bss zeroed, then main(). */
void Reset_Handler(void);

/* Core exceptions: each calls th_port_fault with its name. */
void NMI_Handler(void);
void HardFault_Handler(void);
void MemManage_Handler(void);
void BusFault_Handler(void);
void UsageFault_Handler(void);
void Default_Handler(void); /* any interrupt the port does not use */

/* The 16 core entries every vector table starts with, as designated initializers; a port's
 * table continues with its interrupts from index 16 (GNU range designators, not overlapping:
 * -Woverride-init would object). */
#define CM_CORE_VECTORS                         \
    [0] = (cm_vector_t)(uintptr_t)&_estack,     \
    [1] = Reset_Handler,                        \
    [2] = NMI_Handler,                          \
    [3] = HardFault_Handler,                    \
    [4] = MemManage_Handler,                    \
    [5] = BusFault_Handler,                     \
    [6] = UsageFault_Handler,                   \
    [11] = Default_Handler, /* SVCall */        \
    [12] = Default_Handler, /* DebugMonitor */  \
    [14] = Default_Handler, /* PendSV */        \
    [15] = Default_Handler  /* SysTick */

/* Mask interrupts, returning the previous PRIMASK for cm_irq_restore. */
static inline uint32_t cm_irq_save(void) {
    uint32_t primask;
    __asm volatile("mrs %0, primask\n\tcpsid i" : "=r"(primask)::"memory");
    return primask;
}

static inline void cm_irq_restore(uint32_t primask) {
    __asm volatile("msr primask, %0" ::"r"(primask) : "memory");
}

/* The protocol UART's receive ring (rx_ring.c): the port's receive interrupt pushes, the
 * harness pops through th_serial_read; rx_ring.c also gives th_wait_for_input. */
int cm_rx_full(void);
void cm_rx_push(uint8_t c); /* from the interrupt; only when not full */
int cm_rx_pop(void);        /* the next byte, or -1 when the ring is empty */

/* The port's fault stop: report `what` (cm_fault_message) on the protocol UART, then halt. */
__attribute__((noreturn)) void th_port_fault(const char *what);

/* Longest message cm_fault_message writes, terminator included. */
#define CM_FAULT_MESSAGE_BYTES 128u

/* "e-[Firmware fault: <what>, CFSR=0x..., HFSR=0x...]\r\n" into `out` (CM_FAULT_MESSAGE_BYTES),
 * NUL-terminated; `what` is cut to fit. Returns its length. */
size_t cm_fault_message(char *out, const char *what);

#endif /* CORTEX_M_H */
