// A gRPC length-prefixed message (1 byte "compressed" flag, 4 bytes length, the
// message). An encoder that knows the message's size can write it behind room
// for the prefix: the HTTP/2 server then sends the whole buffer as it is,
// instead of copying a large message (a list page of many MiB) into a new one.

const FRAMED = Symbol('metaetcd.grpcFrame');

type Framable = Buffer & { [FRAMED]?: Buffer };

/** A buffer for a message of `size` bytes to encode into, with the prefix already written in front of it. */
export function allocFramed(size: number): Buffer {
  const whole = Buffer.allocUnsafe(5 + size);
  whole[0] = 0;
  whole.writeUInt32BE(size, 1);
  const message = whole.subarray(5) as Framable;
  message[FRAMED] = whole;
  return message;
}

/** The framed message: the prefixed buffer `allocFramed` made, or a new one with a copy of `message`. */
export function framed(message: Buffer): Buffer {
  const whole = (message as Framable)[FRAMED];
  if (whole !== undefined && whole.length === message.length + 5) return whole;
  const out = Buffer.allocUnsafe(message.length + 5);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  message.copy(out, 5);
  return out;
}
