// Reads a V8 .cpuprofile (node --cpu-prof) and ranks functions by self time, so that a run
// names the per-request costs worth removing. Open the file itself in Chrome DevTools or
// speedscope for the flame graph.
import { readFileSync } from 'node:fs'
import { relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { REPO_ROOT } from './processes.js'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
}

interface Profile {
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
}

export interface HotFunction {
  name: string
  /** file:line, relative to the repository when inside it. */
  location: string
  selfMs: number
  /** Share of the busy (non-idle) samples. */
  selfPercent: number
}

export interface ProfileSummary {
  totalMs: number
  idleMs: number
  top: HotFunction[]
  /** Self time summed per package (node_modules/<name>), per file of ours, node internals, native/VM. */
  byPackage: { name: string; selfMs: number; selfPercent: number }[]
}

export function summariseProfile(path: string, count = 10): ProfileSummary {
  const profile = JSON.parse(readFileSync(path, 'utf8')) as Profile
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]))
  const selfUs = new Map<string, number>()
  const packageUs = new Map<string, number>()
  let totalUs = 0
  let idleUs = 0
  profile.samples.forEach((id, index) => {
    // timeDeltas[i] is the time before sample i; attribute the next one to it, as DevTools does.
    const us = profile.timeDeltas[index + 1] ?? 0
    const frame = nodes.get(id)?.callFrame
    if (!frame) return
    totalUs += us
    if (frame.functionName === '(idle)') {
      idleUs += us
      return
    }
    const key = `${frame.functionName || '(anonymous)'}\0${where(frame.url, frame.lineNumber)}`
    selfUs.set(key, (selfUs.get(key) ?? 0) + us)
    const owner = packageOf(frame.url)
    packageUs.set(owner, (packageUs.get(owner) ?? 0) + us)
  })
  const busyUs = Math.max(1, totalUs - idleUs)
  const top = [...selfUs.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, count)
    .map(([key, us]) => {
      const [name = '', location = ''] = key.split('\0')
      return { name, location, selfMs: us / 1000, selfPercent: (100 * us) / busyUs }
    })
  const byPackage = [...packageUs.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, count)
    .map(([name, us]) => ({ name, selfMs: us / 1000, selfPercent: (100 * us) / busyUs }))
  return { totalMs: totalUs / 1000, idleMs: idleUs / 1000, top, byPackage }
}

function packageOf(url: string): string {
  if (!url) return '(native, GC and VM)'
  if (url.startsWith('node:')) return 'node internals'
  if (url.startsWith('wasm:')) return '(wasm: undici llhttp)'
  const inModules = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (inModules?.[1]) return inModules[1]
  const file = url.startsWith('file://') ? fileURLToPath(url) : url
  return file.startsWith(REPO_ROOT) ? relative(REPO_ROOT, file) : file
}

function where(url: string, line: number): string {
  if (!url) return ''
  const file = url.startsWith('file://') ? fileURLToPath(url) : url
  const shown = file.startsWith(REPO_ROOT) ? relative(REPO_ROOT, file) : file
  return `${shown}:${line + 1}`
}
