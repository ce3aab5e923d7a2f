/*
 * th_harness: the MLPerf Tiny protocol; see th_harness.h. Replies, error texts and quirks
 * follow host/dut/software_dut.py, which documents where they come from (the reference's
 * `db print` layout, `infer N` defaulting to 10 warm-ups, the misspelt hex-digit error) and
 * where it answers `e-[...]` instead of carrying on with garbage.
 */
#include "th_harness.h"

#include <stdint.h>
#include <string.h>

#include "th_format.h"
#include "th_model_io.h"
#include "th_port.h"
#include "th_suite.h"

#define TH_CMD_SIZE 80u /* EE_CMD_SIZE */
#define TH_FW_VERSION "ULPMark for tinyML Firmware V0.0.1"
#define TH_DEFAULT_WARMUPS 10 /* what `infer N` runs, although help says W=0 */
#define TH_DB_PRINT_PER_LINE 8
#define TH_MAX_ARGS 3

#ifndef TH_ENERGY_MODE /* the boot mode (EE_CFG_ENERGY_MODE); `mode` changes it */
#define TH_ENERGY_MODE 0
#endif
#ifndef TH_TIMESTAMP_HOLD_US /* how long the timestamp pin is held low */
#define TH_TIMESTAMP_HOLD_US 100u
#endif

typedef struct {
    const char *text;
    size_t len;
} token_t;

static const char *const HELP_LINES[] = {
    TH_FW_VERSION,
    "",
    "help         : Print this information",
    "name         : Print the name of the device",
    "timestsamp   : Generate a timetsamp",
    "db SUBCMD    : Manipulate a generic byte buffer",
    "  load N     : Allocate N bytes and set load counter",
    "  db HH[HH]* : Load 8-bit hex byte(s) until N bytes",
    "  print [N=16] [offset=0]",
    "             : Print N bytes at offset as hex",
    "infer N [W=0]: Load input, execute N inferences after W warmup loops",
    "results      : Return the result fp32 vector",
};

static char g_cmd[TH_CMD_SIZE];
static size_t g_cmd_len;
static int g_cmd_overflow;
static uint8_t g_buffer[TH_WIRE_BYTES]; /* the `db load` buffer */
static size_t g_size;                   /* its announced size */
static size_t g_loaded;                 /* bytes received so far */
static int g_energy_mode = TH_ENERGY_MODE;
static int g_have_results;

/* -- output -------------------------------------------------------------------------- */

static void put(const char *text, size_t len) {
    th_serial_write(text, len);
}

static void put_str(const char *text) {
    put(text, strlen(text));
}

static void put_token(token_t t) {
    put(t.text, t.len);
}

static void put_i64(int64_t v) {
    char digits[20];
    size_t n = 0;
    uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    if (v < 0) {
        put("-", 1);
    }
    do {
        digits[n++] = (char)('0' + (int)(mag % 10u));
        mag /= 10u;
    } while (mag);
    while (n) {
        put(&digits[--n], 1);
    }
}

static void end_line(void) {
    put("\r\n", 2);
}

static void line(const char *text) {
    put_str(text);
    end_line();
}

/* -- parsing ------------------------------------------------------------------------- */

/* Whitespace as Python's str.isspace() sees a latin-1 character (the host's atoi). */
static int is_space(unsigned char c) {
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f) || c == 0x85 ||
           c == 0xa0;
}

/* C atoi (leading integer, 0 when none), saturating instead of overflowing. */
static int64_t atoi_token(token_t t) {
    size_t i = 0;
    int negative = 0;
    int64_t value = 0;
    while (i < t.len && is_space((unsigned char)t.text[i])) {
        i++;
    }
    if (i < t.len && (t.text[i] == '+' || t.text[i] == '-')) {
        negative = t.text[i++] == '-';
    }
    for (; i < t.len && t.text[i] >= '0' && t.text[i] <= '9'; i++) {
        int digit = t.text[i] - '0';
        value = value > (INT64_MAX - digit) / 10 ? INT64_MAX : value * 10 + digit;
    }
    return negative ? -value : value;
}

static int token_is(token_t t, const char *word) {
    return t.len == strlen(word) && memcmp(t.text, word, t.len) == 0;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* -- timestamps ---------------------------------------------------------------------- */

/* th_timestamp(): a falling edge held low (energy mode) or an m-lap-us- line (performance). */
static void timestamp(void) {
    if (g_energy_mode) {
        th_pin_write(0);
        th_delay_us(TH_TIMESTAMP_HOLD_US);
        th_pin_write(1);
        return;
    }
    char digits[11];
    uint32_t us = th_time_us();
    put_str("m-lap-us-");
    put(digits, th_format_u32(digits, us));
    end_line();
}

/* -- commands ------------------------------------------------------------------------ */

static void cmd_db_load(const token_t *args, size_t nargs) {
    if (nargs < 1) {
        line("e-[Command 'db load' requires the # of bytes]");
        return;
    }
    int64_t size = atoi_token(args[0]);
    if (size <= 0) {
        line("e-[Command 'db load' must be >0 bytes]");
        return;
    }
    g_loaded = 0;
    th_state(TH_STATE_IO);
    if (size > (int64_t)TH_WIRE_BYTES) {
        g_size = 0; /* where the reference would overrun its buffer, take nothing */
        put_str("Supplied buffer size ");
        put_i64(size);
        put_str(" exceeds maximum of ");
        put_i64(TH_WIRE_BYTES);
        end_line();
        return;
    }
    g_size = (size_t)size;
    memset(g_buffer, 0, g_size);
    put_str("m-[Expecting ");
    put_i64(size);
    line(" bytes]");
}

static void cmd_db_print(void) {
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < g_size; i++) {
        char text[3] = {'-', hex[g_buffer[i] >> 4], hex[g_buffer[i] & 15u]};
        if (i % TH_DB_PRINT_PER_LINE == 0) {
            if (i) {
                end_line();
            }
            put_str("m-buffer-");
            put(text + 1, 2);
        } else {
            put(text, 3);
        }
    }
    if (g_size) {
        end_line();
    }
    if (g_size % TH_DB_PRINT_PER_LINE) {
        end_line(); /* the reference ends an odd-sized buffer with one more CR/LF */
    }
}

static void cmd_db_hex(token_t digits) {
    if (digits.len % 2) {
        line("e-[Insufficent number of hex digits]"); /* sic, as the reference spells it */
        return;
    }
    for (size_t i = 0; i < digits.len; i += 2) {
        int hi = hex_value(digits.text[i]), lo = hex_value(digits.text[i + 1]);
        if (hi < 0 || lo < 0) {
            put_str("e-[Invalid hex digit '");
            put(digits.text + i, 2);
            line("']");
            return;
        }
        if (g_loaded == g_size) {
            return; /* digits past the announced size are disregarded */
        }
        g_buffer[g_loaded++] = (uint8_t)(hi << 4 | lo);
        if (g_loaded == g_size) {
            th_state(TH_STATE_IDLE);
            line("m-load-done");
            return;
        }
    }
}

static void cmd_db(const token_t *args, size_t nargs) {
    if (nargs < 1) {
        line("e-[Command 'db' requires a subcommand]");
    } else if (token_is(args[0], "load")) {
        cmd_db_load(args + 1, nargs - 1);
    } else if (token_is(args[0], "print")) {
        cmd_db_print();
    } else {
        cmd_db_hex(args[0]);
    }
}

static void put_results(void) {
    put_str("m-results-[");
    th_results(put);
    line("]");
}

static void cmd_infer(const token_t *args, size_t nargs) {
    int64_t n = nargs > 0 ? atoi_token(args[0]) : 1;
    if (n <= 0) {
        line("e-[Inference iterations must be >0]");
        return;
    }
    int64_t warmups = nargs > 1 ? atoi_token(args[1]) : TH_DEFAULT_WARMUPS;
    if (warmups < 0) {
        line("e-[Inference warmup must be >=0]");
        return;
    }
    if (g_loaded != TH_WIRE_BYTES) {
        put_str("e-[Input buffer holds ");
        put_i64((int64_t)g_loaded);
        put_str(" bytes, " TH_SUITE_NAME " needs ");
        put_i64(TH_WIRE_BYTES);
        put_str(": send db load ");
        put_i64(TH_WIRE_BYTES);
        line(" and db first]");
        return;
    }
    th_load_tensor(g_buffer);
    put_str("m-warmup-start-");
    put_i64(warmups);
    end_line();
    th_state(TH_STATE_ACTIVE);
    for (int64_t i = 0; i < warmups; i++) {
        th_infer();
    }
    line("m-warmup-done");
    put_str("m-infer-start-");
    put_i64(n);
    end_line();
    timestamp(); /* only the N inferences lie between the two timestamps */
    for (int64_t i = 0; i < n; i++) {
        th_infer();
    }
    timestamp();
    th_state(TH_STATE_IDLE);
    line("m-infer-done");
    g_have_results = 1;
    put_results();
}

static void cmd_mode(const token_t *args, size_t nargs) {
    if (nargs > 0) {
        if (token_is(args[0], "energy") || token_is(args[0], "performance")) {
            g_energy_mode = token_is(args[0], "energy");
        } else {
            put_str("e-[Unknown mode '");
            put_token(args[0]);
            line("': send mode energy or mode performance]");
            return;
        }
    }
    line(g_energy_mode ? "m-mode-[energy]" : "m-mode-[performance]");
}

static void execute(void) {
    token_t words[TH_MAX_ARGS + 1];
    size_t count = 0, i = 0;
    while (i < g_cmd_len && count < TH_MAX_ARGS + 1) { /* strtok on " " */
        while (i < g_cmd_len && g_cmd[i] == ' ') {
            i++;
        }
        size_t start = i;
        while (i < g_cmd_len && g_cmd[i] != ' ') {
            i++;
        }
        if (i > start) {
            words[count].text = g_cmd + start;
            words[count++].len = i - start;
        }
    }
    token_t command = count ? words[0] : (token_t){g_cmd, 0};
    const token_t *args = words + 1;
    size_t nargs = count ? count - 1 : 0;
    if (token_is(command, "name")) {
        put_str("m-name-dut-[");
        put_str(th_port_name());
        line("]");
    } else if (token_is(command, "timestamp")) {
        timestamp();
    } else if (token_is(command, "profile")) {
        line("m-profile-[" TH_FW_VERSION "]");
        line("m-model-[" TH_SUITE_NAME "]");
    } else if (token_is(command, "help")) {
        for (size_t k = 0; k < sizeof HELP_LINES / sizeof HELP_LINES[0]; k++) {
            line(HELP_LINES[k]);
        }
    } else if (token_is(command, "db")) {
        cmd_db(args, nargs);
    } else if (token_is(command, "infer")) {
        cmd_infer(args, nargs);
    } else if (token_is(command, "results")) {
        if (g_have_results) {
            put_results();
        } else {
            line("e-[No results yet: run infer first]");
        }
    } else if (token_is(command, "mode")) {
        cmd_mode(args, nargs);
    } else {
        put_str("e-[Unknown command: ");
        put_token(command);
        line("]");
    }
}

/* -- entry points -------------------------------------------------------------------- */

void th_harness_boot(void) {
    line(g_energy_mode ? "m-timestamp-mode-energy" : "m-timestamp-mode-performance");
    timestamp(); /* th_timestamp_initialize(): sets the open-drain pin, one spurious pulse */
    line("m-init-done");
    line("m-ready");
}

void th_harness_byte(char c) {
    if (c != '%') {
        if (g_cmd_len < TH_CMD_SIZE) {
            g_cmd[g_cmd_len++] = c;
        } else {
            g_cmd_overflow = 1;
        }
        return;
    }
    if (g_cmd_overflow) {
        line("e-[Command too long: more than 80 characters before '%']");
    } else {
        execute();
    }
    g_cmd_len = 0;
    g_cmd_overflow = 0;
    line("m-ready");
}
