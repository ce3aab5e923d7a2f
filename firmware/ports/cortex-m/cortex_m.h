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

/* The port's fault stop: report `what` (cm_fault_message) on the protocol UART, then halt. */
__attribute__((noreturn)) void th_port_fault(const char *what);

/* Longest message cm_fault_message writes, terminator included. */
#define CM_FAULT_MESSAGE_BYTES 128u

/* "e-[Firmware fault: <what>, CFSR=0x..., HFSR=0x...]\r\n" into `out` (CM_FAULT_MESSAGE_BYTES),
 * NUL-terminated; `what` is cut to fit. Returns its length. */
size_t cm_fault_message(char *out, const char *what);

#endif /* CORTEX_M_H */
