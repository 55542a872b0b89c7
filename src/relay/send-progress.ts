// Whether a client has taken anything from its socket lately, for the send timeout. A write's
// callback says so, but only once the kernel has taken the whole write, and the kernel wakes a
// writer only when a third of a large socket buffer is free: a client reading a few KB/s from
// localhost can take minutes to free that much. So when no write has completed, the kernel's
// own count of bytes sent and not yet acknowledged (tx_queue in /proc/net/tcp) is asked too: if
// it fell, the client read. Linux only; elsewhere write callbacks alone count.
import { readFileSync } from 'node:fs'
import type { Socket } from 'node:net'

const TABLES = ['/proc/net/tcp', '/proc/net/tcp6']
const ESTABLISHED = '01'
/** Timers of many stalled clients fire together: one read of the tables serves them all. */
const TABLE_TTL_MS = 250

/** tx_queue by "localPort:remotePort" (hex, as the tables write them); null where ambiguous. */
let table: Map<string, number | null> | undefined
let tableReadAt = 0
let unavailable = false

/** Bytes the socket has sent that the peer has not acknowledged; undefined when unknown. */
export function unacknowledgedBytes(socket: Socket): number | undefined {
  if (unavailable || socket.localPort === undefined || socket.remotePort === undefined) return undefined
  const now = performance.now()
  if (table === undefined || now - tableReadAt > TABLE_TTL_MS) {
    table = readTables()
    tableReadAt = now
    if (table === undefined) {
      unavailable = true
      return undefined
    }
  }
  return table.get(`${hexPort(socket.localPort)}:${hexPort(socket.remotePort)}`) ?? undefined
}

function readTables(): Map<string, number | null> | undefined {
  const queues = new Map<string, number | null>()
  let found = false
  for (const path of TABLES) {
    let text: string
    try {
      text = readFileSync(path, 'latin1')
    } catch {
      continue
    }
    found = true
    // "sl local_address rem_address st tx_queue:rx_queue ...", addresses as HEXADDR:HEXPORT.
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/)
      if (fields.length < 5 || fields[3] !== ESTABLISHED) continue
      const local = fields[1] as string
      const remote = fields[2] as string
      const key = `${local.slice(local.lastIndexOf(':') + 1)}:${remote.slice(remote.lastIndexOf(':') + 1)}`
      const queued = Number.parseInt((fields[4] as string).split(':')[0] as string, 16)
      queues.set(key, queues.has(key) ? null : queued)
    }
  }
  return found ? queues : undefined
}

function hexPort(port: number): string {
  return port.toString(16).toUpperCase().padStart(4, '0')
}
