/*
 * th_port: what the benchmark harness needs from a board (one implementation per
 * firmware/ports/<board>/port.c).
 *
 * The MLPerf Tiny reference splits the firmware into a harness that speaks the protocol and
 * `th_*` functions a submitter implements per board. This is our version of that split:
 * a protocol UART with an interrupt-fed receive buffer, a free-running microsecond counter,
 * the timestamp pin, and an optional event line on which an emulated board reports its pin,
 * its activity and its time to the simulated energy monitor (a no-op on hardware).
 */
#ifndef TH_PORT_H
#define TH_PORT_H

#include <stddef.h>
#include <stdint.h>

/* What the board is doing, for the energy model of an emulated board. */
typedef enum {
    TH_STATE_IDLE = 0,   /* waiting for a command */
    TH_STATE_IO = 1,     /* receiving an input (between `db load` and `m-load-done`) */
    TH_STATE_ACTIVE = 2  /* running inferences */
} th_state_t;

/* Clocks, FPU, protocol UART (receive interrupt enabled), timer, timestamp pin (high). */
void th_port_init(void);

/* The DUT's name in `m-name-dut-[...]`. */
const char *th_port_name(void);

/* Send bytes on the protocol UART; returns when they are handed to the hardware. */
void th_serial_write(const char *data, size_t len);

/* The next received byte, or -1 when none is waiting. */
int th_serial_read(void);

/* Sleep until an interrupt; returns at once if a received byte is already waiting. */
void th_wait_for_input(void);

/* Free-running microsecond counter, wrapping at 2^32 (read it at least once per wrap). */
uint32_t th_time_us(void);

/* Busy-wait at least `us` microseconds. */
void th_delay_us(uint32_t us);

/* Drive the timestamp pin (idle high; a falling edge marks a timestamp in energy mode). */
void th_pin_write(int high);

/* Report a change of activity (the emulator's event line); hardware ports ignore it. */
void th_state(th_state_t state);

#endif /* TH_PORT_H */
