// Older commits of this repository checked out beside it, for a benchmark of the proxy as it
// was (bench/tracing.ts): git worktrees (detached) whose node_modules is a link to this
// checkout's, so that nothing is installed. Every one added is removed by removeAll(), which
// run.ts calls at the end, on Ctrl-C and on errors, like ProcessGroup.stopAll().
import { execFileSync, spawnSync } from 'node:child_process'
import { readFileSync, symlinkSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'
import { REPO_ROOT } from './processes.js'

export class Worktrees {
  readonly #paths: string[] = []

  /** Checks commit out at path (which must not exist), with this checkout's node_modules linked in. */
  add(commit: string, path: string): void {
    execFileSync('git', ['worktree', 'add', '--detach', path, commit], { cwd: REPO_ROOT, stdio: 'ignore' })
    this.#paths.push(path)
    symlinkSync(join(REPO_ROOT, 'node_modules'), join(path, 'node_modules'), 'dir')
  }

  /** Removes a worktree added here (build output and all); nothing if it is not one, or gone already. */
  remove(path: string): void {
    const at = this.#paths.indexOf(path)
    if (at === -1) return
    this.#paths.splice(at, 1)
    // The link first, so that nothing removing the worktree can reach this checkout's modules.
    try {
      unlinkSync(join(path, 'node_modules'))
    } catch {
      // Not linked yet.
    }
    spawnSync('git', ['worktree', 'remove', '--force', path], { cwd: REPO_ROOT, stdio: 'ignore' })
  }

  /** Removes every worktree added; safe to call more than once. */
  removeAll(): void {
    for (const path of [...this.#paths]) this.remove(path)
  }
}

/**
 * The runtime dependencies of the checkout at root whose version in its package-lock.json is not
 * the one installed in this checkout's node_modules: "name lock-version != installed-version".
 */
export function dependencyMismatches(root: string): string[] {
  const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
    dependencies?: Record<string, string>
  }
  const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')) as {
    packages?: Record<string, { version?: string }>
  }
  const mismatches: string[] = []
  for (const name of Object.keys(manifest.dependencies ?? {})) {
    const locked = lock.packages?.[`node_modules/${name}`]?.version
    let installed: string | undefined
    try {
      installed = (
        JSON.parse(readFileSync(join(REPO_ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version?: string }
      ).version
    } catch {
      installed = undefined
    }
    if (locked !== installed) mismatches.push(`${name} ${locked ?? 'unlocked'} != ${installed ?? 'not installed'}`)
  }
  return mismatches
}
