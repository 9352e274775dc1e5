/**
 * Frames amqplib writes one by one (a publish each) sent to the broker together (internal: not exported by
 * the package): the connection's socket is corked while they are written and uncorked once amqplib's
 * writer has passed them on, so that a batch leaves in one system call instead of one per message.
 *
 * @since 0.2.0
 */
import type { Channel } from "amqplib"
import { Socket } from "node:net"

/** The socket under a channel's connection, where amqplib keeps it (its `stream`); undefined otherwise. */
const socketOf = (channel: Channel): Socket | undefined => {
  const stream: unknown = Reflect.get(channel.connection, "stream")
  return stream instanceof Socket ? stream : undefined
}

/**
 * Runs `write` (amqplib calls on `channel`) with the connection's socket corked. amqplib hands the frames
 * to the socket in a callback it schedules with `setImmediate` once its channel buffer becomes readable (on
 * the next tick); the socket is uncorked by a callback scheduled from one of the same kind, which runs
 * after it. Without a socket to cork, `write` runs as it is.
 */
export const writeBatch = <A>(channel: Channel, write: () => A): A => {
  const socket = socketOf(channel)
  if (socket === undefined) return write()
  socket.cork()
  try {
    return write()
  } finally {
    setImmediate(() => setImmediate(() => socket.uncork()))
  }
}
