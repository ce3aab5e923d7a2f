/*
 * Reset and fault handling shared by every Cortex-M port (ARMv7-M: CPACR, VTOR, CFSR and HFSR
 * are architectural, at the same System Control Block addresses on every M3/M4/M7).
 */
#include "cortex_m.h"

int main(void);

#define SCB_VTOR (*(volatile uint32_t *)0xE000ED08u)
#define SCB_CFSR (*(volatile uint32_t *)0xE000ED28u)
#define SCB_HFSR (*(volatile uint32_t *)0xE000ED2Cu)
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

void Reset_Handler(void) {
#if defined(__ARM_FP)
    SCB_CPACR |= 0xFu << 20; /* CP10 and CP11 full access, before any float instruction */
#endif
    SCB_VTOR = (uint32_t)(uintptr_t)cm_vectors; /* a boot alias at 0 need not be the table */
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

void NMI_Handler(void) { th_port_fault("NMI"); }
void HardFault_Handler(void) { th_port_fault("HardFault"); }
void MemManage_Handler(void) { th_port_fault("MemManage"); }
void BusFault_Handler(void) { th_port_fault("BusFault"); }
void UsageFault_Handler(void) { th_port_fault("UsageFault"); }
void Default_Handler(void) { th_port_fault("unexpected interrupt"); }

static size_t put(char *out, size_t at, const char *text) {
    while (*text && at < CM_FAULT_MESSAGE_BYTES - 1u) {
        out[at++] = *text++;
    }
    return at;
}

static size_t put_hex(char *out, size_t at, uint32_t value) {
    static const char digits[] = "0123456789abcdef";
    char text[11] = "0x";
    for (int i = 0; i < 8; i++) {
        text[2 + i] = digits[(value >> (28 - 4 * i)) & 15u];
    }
    text[10] = '\0';
    return put(out, at, text);
}

size_t cm_fault_message(char *out, const char *what) {
    /* Room for the fixed text after `what`: ", CFSR=0x........, HFSR=0x........]\r\n". */
    static const size_t tail = 37u;
    size_t at = put(out, 0, "e-[Firmware fault: ");
    while (*what && at < CM_FAULT_MESSAGE_BYTES - 1u - tail) {
        out[at++] = *what++;
    }
    at = put(out, at, ", CFSR=");
    at = put_hex(out, at, SCB_CFSR);
    at = put(out, at, ", HFSR=");
    at = put_hex(out, at, SCB_HFSR);
    at = put(out, at, "]\r\n");
    out[at] = '\0';
    return at;
}
