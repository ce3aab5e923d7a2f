/*
 * th_main: the firmware's main loop: bring the board up, print the banner, then feed every
 * received byte to the protocol and sleep whenever nothing is waiting.
 */
#include "th_harness.h"
#include "th_port.h"

int main(void) {
    th_port_init();
    th_harness_boot();
    for (;;) {
        int c = th_serial_read();
        if (c < 0) {
            th_wait_for_input();
        } else {
            th_harness_byte((char)c);
        }
    }
}
