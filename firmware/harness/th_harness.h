/*
 * th_harness: the MLPerf Tiny host protocol on the DUT (shared/reference/
 * mlperf-tiny-protocol.md §2-§9), byte for byte as the reference firmware and the virtual
 * lab's software DUT (host/dut/software_dut.py) answer it, plus one extension: `mode energy%`
 * and `mode performance%` switch the timestamp mode at run time, so one build serves every
 * run mode (the reference needs a rebuild).
 */
#ifndef TH_HARNESS_H
#define TH_HARNESS_H

/* Print the boot banner (mode, the initial timestamp, m-init-done, m-ready). */
void th_harness_boot(void);

/* One received byte (ee_serial_callback): runs the command when it is the '%' terminator. */
void th_harness_byte(char c);

#endif /* TH_HARNESS_H */
