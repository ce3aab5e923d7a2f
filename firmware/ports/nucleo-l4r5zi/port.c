/*
 * th_port for the ST NUCLEO-L4R5ZI (STM32L4R5ZI, Cortex-M4F), the MLPerf Tiny reference
 * board, at register level (no SDK). Register facts are from ST's RM0432 (STM32L4+ reference
 * manual) and UM2179 (NUCLEO-L4R5ZI user manual); where a detail is from memory rather than
 * checked against the manual, the comment says so. Not yet run on hardware: built in CI only.
 *
 * Clocks: MSI 4 MHz (its reset state) -> PLL (M 1, N 60, R 2) = 120 MHz SYSCLK in range 1
 * boost mode, with RM0432's sequence for going above 80 MHz (AHB /2 during the switch, /1 after
 * at least 1 us). APB1 and APB2 run undivided at 120 MHz.
 *
 * Protocol UART: LPUART1 on PG7 (TX) / PG8 (RX), AF8, wired to the ST-LINK's virtual COM port
 * (and to the IO manager in energy mode). Port G sits on VDDIO2, which must be declared valid
 * (PWR_CR2.IOSV) before the pins work. LPUART1 is clocked from HSI16 so both 115200 and
 * 9600 baud are in range (BRR = 256 * 16 MHz / baud). The baud is TH_UART_BAUD, passed at build
 * time by host/firmware.py from the board file's [uart] table.
 *
 * Microsecond clock: TIM2, 32 bits, prescaled from 120 MHz to 1 MHz, free running.
 * Timestamp pin: PF13, Arduino D7 on the Nucleo-144 header, idle high.
 */
#include <stdint.h>

#include "cortex_m.h"
#include "th_port.h"

#ifndef TH_UART_BAUD
#define TH_UART_BAUD 115200u
#endif

#define REG(base, offset) (*(volatile uint32_t *)((base) + (offset)))

/* RCC */
#define RCC 0x40021000u
#define RCC_CR REG(RCC, 0x00)
#define RCC_CFGR REG(RCC, 0x08)
#define RCC_PLLCFGR REG(RCC, 0x0C)
#define RCC_AHB2ENR REG(RCC, 0x4C)
#define RCC_APB1ENR1 REG(RCC, 0x58)
#define RCC_APB1ENR2 REG(RCC, 0x5C)
#define RCC_CCIPR REG(RCC, 0x88)
#define RCC_CR_HSION (1u << 8)
#define RCC_CR_HSIRDY (1u << 10)
#define RCC_CR_PLLON (1u << 24)
#define RCC_CR_PLLRDY (1u << 25)
#define RCC_CFGR_SW_MASK 3u
#define RCC_CFGR_SW_PLL 3u
#define RCC_CFGR_SWS_MASK (3u << 2)
#define RCC_CFGR_SWS_PLL (3u << 2)
#define RCC_CFGR_HPRE_MASK (15u << 4)
#define RCC_CFGR_HPRE_DIV2 (8u << 4)
#define RCC_PLLCFGR_PLLSRC_MSI 1u
#define RCC_PLLCFGR_PLLM(m) (((m) - 1u) << 4)
#define RCC_PLLCFGR_PLLN(n) ((n) << 8)
#define RCC_PLLCFGR_PLLREN (1u << 24)
#define RCC_PLLCFGR_PLLR_DIV2 (0u << 25)
#define RCC_AHB2ENR_GPIOF (1u << 5)
#define RCC_AHB2ENR_GPIOG (1u << 6)
#define RCC_APB1ENR1_TIM2 (1u << 0)
#define RCC_APB1ENR1_PWR (1u << 28)
#define RCC_APB1ENR2_LPUART1 (1u << 0)
#define RCC_CCIPR_LPUART1SEL_MASK (3u << 10)
#define RCC_CCIPR_LPUART1SEL_HSI16 (2u << 10)

/* PWR */
#define PWR 0x40007000u
#define PWR_CR2 REG(PWR, 0x04)
#define PWR_SR2 REG(PWR, 0x14)
#define PWR_CR5 REG(PWR, 0x80)
#define PWR_CR2_IOSV (1u << 9)
#define PWR_SR2_VOSF (1u << 10)
#define PWR_CR5_R1MODE (1u << 8)

/* FLASH */
#define FLASH_ACR REG(0x40022000u, 0x00)
#define FLASH_ACR_LATENCY_MASK 15u
#define FLASH_ACR_LATENCY_5WS 5u /* range 1 boost, 100 < HCLK <= 120 MHz (RM0432 table 12) */

/* GPIO */
#define GPIOF 0x48001400u
#define GPIOG 0x48001800u
#define GPIO_MODER(port) REG(port, 0x00)
#define GPIO_OSPEEDR(port) REG(port, 0x08)
#define GPIO_PUPDR(port) REG(port, 0x0C)
#define GPIO_BSRR(port) REG(port, 0x18)
#define GPIO_AFRL(port) REG(port, 0x20)
#define GPIO_AFRH(port) REG(port, 0x24)
#define GPIO_MODE_OUTPUT 1u
#define GPIO_MODE_AF 2u
#define PIN_TIMESTAMP 13u /* PF13 */
#define PIN_TX 7u         /* PG7 */
#define PIN_RX 8u         /* PG8 */
#define AF_LPUART1 8u

/* LPUART1 */
#define LPUART1 0x40008000u
#define LPUART_CR1 REG(LPUART1, 0x00)
#define LPUART_BRR REG(LPUART1, 0x0C)
#define LPUART_ISR REG(LPUART1, 0x1C)
#define LPUART_ICR REG(LPUART1, 0x20)
#define LPUART_RDR REG(LPUART1, 0x24)
#define LPUART_TDR REG(LPUART1, 0x28)
#define LPUART_CR1_UE (1u << 0)
#define LPUART_CR1_RE (1u << 2)
#define LPUART_CR1_TE (1u << 3)
#define LPUART_CR1_RXNEIE (1u << 5) /* also raises the interrupt on overrun (ORE) */
#define LPUART_ISR_ORE (1u << 3)
#define LPUART_ISR_RXNE (1u << 5)
#define LPUART_ISR_TXE (1u << 7)
#define LPUART_ICR_ORECF (1u << 3)
#define LPUART_CLOCK_HZ 16000000u /* HSI16 */
/* 256 * f / baud, rounded; RM0432 requires 0x300 <= BRR < 2^20 and 3 * baud <= f <= 4096 * baud:
 * 35,556 at 115200, 426,667 at 9600. */
#define LPUART_BRR_VALUE ((256ull * LPUART_CLOCK_HZ + TH_UART_BAUD / 2u) / TH_UART_BAUD)
#define IRQ_LPUART1 70u
#define NVIC_ISER2 (*(volatile uint32_t *)0xE000E108u) /* IRQs 64-95 */

/* TIM2 */
#define TIM2 0x40000000u
#define TIM_CR1 REG(TIM2, 0x00)
#define TIM_EGR REG(TIM2, 0x14)
#define TIM_CNT REG(TIM2, 0x24)
#define TIM_PSC REG(TIM2, 0x28)
#define TIM_ARR REG(TIM2, 0x2C)
#define TIM_CR1_CEN 1u
#define TIM_EGR_UG 1u

#define SYSCLK_HZ 120000000u

#if LPUART_BRR_VALUE < 0x300u || LPUART_BRR_VALUE >= (1ull << 20)
#error "TH_UART_BAUD is out of LPUART1's range with a 16 MHz kernel clock"
#endif


/* At least `cycles` core cycles (each iteration is more than one). */
static void spin(uint32_t cycles) {
    for (volatile uint32_t i = 0; i < cycles; i++) {
    }
}

/* 120 MHz from MSI through the PLL, in range 1 boost (RM0432 "Dynamic voltage scaling"). */
static void clock_init(void) {
    RCC_APB1ENR1 |= RCC_APB1ENR1_PWR;
    (void)RCC_APB1ENR1; /* the read back lets the enable take effect before PWR is touched */
    RCC_CFGR = (RCC_CFGR & ~RCC_CFGR_HPRE_MASK) | RCC_CFGR_HPRE_DIV2;
    PWR_CR5 &= ~PWR_CR5_R1MODE; /* range 1 boost (VOS is range 1 from reset) */
    while (PWR_SR2 & PWR_SR2_VOSF) { /* from memory: the regulator reports ready here */
    }
    FLASH_ACR = (FLASH_ACR & ~FLASH_ACR_LATENCY_MASK) | FLASH_ACR_LATENCY_5WS;
    while ((FLASH_ACR & FLASH_ACR_LATENCY_MASK) != FLASH_ACR_LATENCY_5WS) {
    }
    /* MSI 4 MHz / M 1 = 4 MHz into the VCO, x N 60 = 240 MHz, / R 2 = 120 MHz. */
    RCC_PLLCFGR = RCC_PLLCFGR_PLLSRC_MSI | RCC_PLLCFGR_PLLM(1u) | RCC_PLLCFGR_PLLN(60u) |
                  RCC_PLLCFGR_PLLR_DIV2 | RCC_PLLCFGR_PLLREN;
    RCC_CR |= RCC_CR_PLLON;
    while (!(RCC_CR & RCC_CR_PLLRDY)) {
    }
    RCC_CFGR = (RCC_CFGR & ~RCC_CFGR_SW_MASK) | RCC_CFGR_SW_PLL;
    while ((RCC_CFGR & RCC_CFGR_SWS_MASK) != RCC_CFGR_SWS_PLL) {
    }
    spin(SYSCLK_HZ / 2u / 1000000u); /* >= 1 us at HCLK 60 MHz */
    RCC_CFGR &= ~RCC_CFGR_HPRE_MASK; /* AHB /1: 120 MHz */
}

static void gpio_init(void) {
    RCC_AHB2ENR |= RCC_AHB2ENR_GPIOF | RCC_AHB2ENR_GPIOG;
    PWR_CR2 |= PWR_CR2_IOSV; /* VDDIO2 valid: port G works */
    (void)RCC_AHB2ENR;
    /* Timestamp pin: high before it becomes an output, so it never glitches low. */
    GPIO_BSRR(GPIOF) = 1u << PIN_TIMESTAMP;
    GPIO_MODER(GPIOF) = (GPIO_MODER(GPIOF) & ~(3u << (2u * PIN_TIMESTAMP))) |
                        (GPIO_MODE_OUTPUT << (2u * PIN_TIMESTAMP));
    /* LPUART1: PG7 TX, PG8 RX (pulled up, idle high when nothing drives it), AF8. */
    GPIO_AFRL(GPIOG) = (GPIO_AFRL(GPIOG) & ~(15u << (4u * PIN_TX))) |
                       (AF_LPUART1 << (4u * PIN_TX));
    GPIO_AFRH(GPIOG) = (GPIO_AFRH(GPIOG) & ~(15u << (4u * (PIN_RX - 8u)))) |
                       (AF_LPUART1 << (4u * (PIN_RX - 8u)));
    GPIO_PUPDR(GPIOG) = (GPIO_PUPDR(GPIOG) & ~(3u << (2u * PIN_RX))) | (1u << (2u * PIN_RX));
    GPIO_OSPEEDR(GPIOG) |= 1u << (2u * PIN_TX); /* medium speed */
    GPIO_MODER(GPIOG) = (GPIO_MODER(GPIOG) & ~((3u << (2u * PIN_TX)) | (3u << (2u * PIN_RX)))) |
                        (GPIO_MODE_AF << (2u * PIN_TX)) | (GPIO_MODE_AF << (2u * PIN_RX));
}

static void uart_init(void) {
    RCC_CR |= RCC_CR_HSION;
    while (!(RCC_CR & RCC_CR_HSIRDY)) {
    }
    RCC_CCIPR = (RCC_CCIPR & ~RCC_CCIPR_LPUART1SEL_MASK) | RCC_CCIPR_LPUART1SEL_HSI16;
    RCC_APB1ENR2 |= RCC_APB1ENR2_LPUART1;
    (void)RCC_APB1ENR2;
    LPUART_CR1 = 0;
    LPUART_BRR = (uint32_t)LPUART_BRR_VALUE; /* 8 data bits, no parity, 1 stop bit: the reset state */
    NVIC_ISER2 = 1u << (IRQ_LPUART1 - 64u);
    LPUART_CR1 = LPUART_CR1_UE | LPUART_CR1_RE | LPUART_CR1_TE | LPUART_CR1_RXNEIE;
}

static void timer_init(void) {
    RCC_APB1ENR1 |= RCC_APB1ENR1_TIM2;
    (void)RCC_APB1ENR1;
    TIM_PSC = SYSCLK_HZ / 1000000u - 1u; /* APB1 /1: the timer clock is 120 MHz */
    TIM_ARR = 0xFFFFFFFFu;
    TIM_EGR = TIM_EGR_UG; /* load the prescaler now, not at the first overflow */
    TIM_CNT = 0;
    TIM_CR1 = TIM_CR1_CEN;
}

void th_port_init(void) {
    clock_init();
    gpio_init();
    timer_init();
    uart_init();
}

const char *th_port_name(void) {
    return "tinypower-nucleo-l4r5zi";
}

static void uart_putc(char c) {
    while (!(LPUART_ISR & LPUART_ISR_TXE)) {
    }
    LPUART_TDR = (uint8_t)c;
}

void th_serial_write(const char *data, size_t len) {
    for (size_t i = 0; i < len; i++) {
        uart_putc(data[i]);
    }
}

void LPUART1_IRQHandler(void) {
    uint32_t isr = LPUART_ISR;
    if (isr & LPUART_ISR_ORE) {
        LPUART_ICR = LPUART_ICR_ORECF; /* a byte was lost; the harness will reject the command */
    }
    while (LPUART_ISR & LPUART_ISR_RXNE) {
        uint8_t c = (uint8_t)LPUART_RDR; /* reading clears RXNE */
        if (!cm_rx_full()) { /* full: dropped (no flow control) */
            cm_rx_push(c);
        }
    }
}

int th_serial_read(void) {
    return cm_rx_pop();
}

uint32_t th_time_us(void) {
    return TIM_CNT;
}

void th_delay_us(uint32_t us) {
    uint32_t start = TIM_CNT;
    while (TIM_CNT - start <= us) { /* <=: at least `us` whole microseconds */
    }
}

void th_pin_write(int high) {
    GPIO_BSRR(GPIOF) = high ? (1u << PIN_TIMESTAMP) : (1u << (PIN_TIMESTAMP + 16u));
}

void th_state(th_state_t state) {
    (void)state; /* a real board's current is measured, not modelled */
}

__attribute__((noreturn)) void th_port_fault(const char *what) {
    char message[CM_FAULT_MESSAGE_BYTES];
    cm_irq_save();
    th_serial_write(message, cm_fault_message(message, what));
    for (;;) { /* halted for a debugger; reset (or reflash) to recover */
    }
}
