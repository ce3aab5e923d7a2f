/*
 * th_model_io: the suite-specific ends of an inference, as the reference firmware's
 * th_load_tensor() and th_results(): wire bytes -> the model's int8 input, and the model's
 * output -> the values of `m-results-[...]`. Both happen outside the timed loop.
 */
#ifndef TH_MODEL_IO_H
#define TH_MODEL_IO_H

#include <stddef.h>
#include <stdint.h>

/* Receives the text of the results payload, piece by piece. */
typedef void (*th_put_fn)(const char *text, size_t len);

/* Convert TH_WIRE_BYTES received bytes into the model's input tensor. */
void th_load_tensor(const uint8_t *wire);

/* Run one inference on the loaded input. */
void th_infer(void);

/* Write the payload of `m-results-[...]` (without the brackets) for the last inference:
 * the dequantised outputs, or for ad01 the mean squared error of input and output. */
void th_results(th_put_fn put);

#endif /* TH_MODEL_IO_H */
