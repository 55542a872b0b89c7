// The benchmark's child processes: spawned pinned to a core when taskset is there, tracked so
// that every one of them (and its workers) is stopped at the end, on Ctrl-C and on errors, and
// the /proc readings taken from them (CPU time, resident memory).
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process'
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { fileURLToPath } from 'node:url'

/** The repository: children run from here (dist/, node_modules/). */
export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url))

/** Core 0 carries the load generator and the origin; core 1 the server under test. */
export const LOAD_CORE = 0
export const SERVER_CORE = 1

const STOP_GRACE_MS = 5_000

export const CLOCK_TICKS_PER_SECOND = (() => {
  const result = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' })
  const ticks = Number(result.stdout?.trim())
  return Number.isInteger(ticks) && ticks > 0 ? ticks : 100
})()

/** Why pinning is off, or undefined when processes are pinned to cores. */
export const pinningUnavailable: string | undefined = (() => {
  if (process.platform !== 'linux') return 'not Linux'
  if (availableParallelism() < 2) return `only ${availableParallelism()} core`
  if (spawnSync('taskset', ['--version']).status !== 0) return 'taskset not installed (util-linux)'
  return undefined
})()

/** Pins this process (every thread) to a core, so in-process load generation stays off the server's core. */
export function pinSelf(core: number): void {
  if (pinningUnavailable) return
  execFileSync('taskset', ['-a', '-p', '-c', String(core), String(process.pid)], { stdio: 'ignore' })
}

export function commandExists(command: string, args: string[] = ['-v']): boolean {
  const result = spawnSync(command, args, { stdio: 'ignore' })
  return result.error === undefined
}

export interface SpawnOptions {
  core?: number
  env?: NodeJS.ProcessEnv
  cwd?: string
  /** Where the child's stdout and stderr go (files: a pipe nobody drains would stall it). */
  stdoutFile?: string
  stderrFile?: string
  /** Signal for a graceful stop; SIGKILL follows after a grace period. */
  stopSignal?: NodeJS.Signals
}

export interface Child {
  readonly name: string
  readonly pid: number
  readonly process: ChildProcess
  /** Resolves with the exit code (or the signal's name) once the child has exited. */
  readonly exited: Promise<number | string>
  readonly hasExited: boolean
}

/** Every process the benchmark started; stopAll() is safe to call more than once. */
export class ProcessGroup {
  readonly #children: Child[] = []
  readonly #stopSignals = new Map<Child, NodeJS.Signals>()
  #closed = false

  spawn(name: string, command: string, args: string[], options: SpawnOptions = {}): Child {
    if (this.#closed) throw new Error(`${name}: not started, the benchmark is stopping`)
    const pinned = options.core !== undefined && !pinningUnavailable
    const [file, argv] = pinned ? ['taskset', ['-c', String(options.core), command, ...args]] : [command, args]
    const stdout = options.stdoutFile ? openSync(options.stdoutFile, 'a') : 'ignore'
    const stderr = options.stderrFile ? openSync(options.stderrFile, 'a') : 'ignore'
    let proc: ChildProcess
    try {
      proc = spawn(file, argv, {
        cwd: options.cwd ?? REPO_ROOT,
        env: options.env ?? process.env,
        stdio: ['ignore', stdout, stderr],
      })
    } finally {
      if (typeof stdout === 'number') closeSync(stdout)
      if (typeof stderr === 'number') closeSync(stderr)
    }
    if (proc.pid === undefined) throw new Error(`${name}: could not start ${command}`)
    let hasExited = false
    const exited = new Promise<number | string>((resolve) => {
      proc.once('exit', (code, signal) => {
        hasExited = true
        resolve(code ?? signal ?? 'unknown')
      })
      proc.once('error', () => {
        hasExited = true
        resolve('spawn error')
      })
    })
    const child: Child = {
      name,
      pid: proc.pid,
      process: proc,
      exited,
      get hasExited() {
        return hasExited
      },
    }
    this.#children.push(child)
    this.#stopSignals.set(child, options.stopSignal ?? 'SIGTERM')
    return child
  }

  /** Stops one child and any process it forked (nginx workers); resolves once all are gone. */
  async stop(child: Child, signal = this.#stopSignals.get(child) ?? 'SIGTERM'): Promise<number | string> {
    const forked = descendants(child.pid)
    if (!child.hasExited) child.process.kill(signal)
    const timer = setTimeout(() => child.process.kill('SIGKILL'), STOP_GRACE_MS)
    const code = await child.exited
    clearTimeout(timer)
    for (const pid of forked) killIfAlive(pid)
    return code
  }

  async stopAll(): Promise<void> {
    this.#closed = true
    await Promise.all(this.#children.map((child) => this.stop(child)))
  }
}

function killIfAlive(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL')
  } catch {
    // Already gone.
  }
}

interface ProcStat {
  ppid: number
  /** utime + stime, in clock ticks, of every thread of the process. */
  cpuTicks: number
}

function readStat(pid: number): ProcStat | undefined {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return undefined
  }
  // Field 2 (comm) is in parentheses and may hold spaces: split after the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
  return { ppid: Number(fields[1]), cpuTicks: Number(fields[11]) + Number(fields[12]) }
}

/** Children and grandchildren of a process (nginx's workers), from /proc. */
export function descendants(root: number): number[] {
  const byParent = new Map<number, number[]>()
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry)
    if (!Number.isInteger(pid)) continue
    const stat = readStat(pid)
    if (!stat) continue
    const siblings = byParent.get(stat.ppid) ?? []
    siblings.push(pid)
    byParent.set(stat.ppid, siblings)
  }
  const found: number[] = []
  const queue = [root]
  while (queue.length > 0) {
    for (const child of byParent.get(queue.shift() as number) ?? []) {
      found.push(child)
      queue.push(child)
    }
  }
  return found
}

/** CPU seconds (user + system, all threads) used so far by these processes together. */
export function cpuSeconds(pids: readonly number[]): number {
  let ticks = 0
  for (const pid of pids) ticks += readStat(pid)?.cpuTicks ?? 0
  return ticks / CLOCK_TICKS_PER_SECOND
}

/** Resident set size in bytes of these processes together (VmRSS from /proc/<pid>/status). */
export function rssBytes(pids: readonly number[]): number {
  let total = 0
  for (const pid of pids) {
    try {
      const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
      total += Number(match?.[1] ?? 0) * 1024
    } catch {
      // The process is gone: it holds nothing.
    }
  }
  return total
}
