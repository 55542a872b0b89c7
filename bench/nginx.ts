// nginx in the benchmark, when it is installed: a static origin (the issue's reference setup),
// and the alternative a user would pick instead of this proxy, a plain reverse proxy that
// injects one static Authorization header. Each instance runs from its own config in the
// benchmark's temp dir (pid, logs and temp paths there), in the foreground, one worker.
import { spawnSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { HOST, waitForPort } from './ports.js'
import { type Child, descendants, type ProcessGroup } from './processes.js'

/** The nginx version string, or undefined when nginx is not installed. */
export function nginxVersion(): string | undefined {
  const result = spawnSync('nginx', ['-v'], { encoding: 'utf8' })
  if (result.error || result.status !== 0) return undefined
  return /nginx\/(\S+)/.exec(result.stderr)?.[1] ?? 'unknown'
}

/** Whether the installed nginx was built with the SSL module (`listen ... ssl`). */
export function nginxHasSsl(): boolean {
  const result = spawnSync('nginx', ['-V'], { encoding: 'utf8' })
  return !result.error && result.status === 0 && result.stderr.includes('--with-http_ssl_module')
}

export type NginxProxyBuffers = 'default' | '64k'

export interface RunningNginx {
  readonly child: Child
  readonly url: string
  /** Master and worker: their CPU and memory together are nginx's cost. */
  readonly pids: number[]
}

function mainConfig(dir: string, name: string, http: string): string {
  const path = (file: string) => join(dir, `${name}-${file}`)
  // As root, workers would switch to "nobody"; stay root so they can read the temp dir.
  const user = process.getuid?.() === 0 ? 'user root;\n' : ''
  return `${user}worker_processes 1;
daemon off;
master_process on;
pid ${path('nginx.pid')};
error_log ${path('error.log')} warn;
events { worker_connections 4096; }
http {
  client_body_temp_path ${path('temp')}/client;
  proxy_temp_path ${path('temp')}/proxy;
  fastcgi_temp_path ${path('temp')}/fastcgi;
  uwsgi_temp_path ${path('temp')}/uwsgi;
  scgi_temp_path ${path('temp')}/scgi;
  server_tokens off;
  keepalive_timeout 65s;
  keepalive_requests 1000000;
${http}
}
`
}

/** A certificate and its key, as files: an origin that serves HTTPS with them. */
export interface TlsFiles {
  certPath: string
  keyPath: string
}

/**
 * Static files from <root>/v3/media/<id>; checks no token. With tls, over HTTPS with that
 * certificate (TLS 1.2 and 1.3, nginx's default ciphers); name it apart from the plain origin,
 * as the name keeps their pid, logs and temp paths apart. With sendBufferBytes, every connection's
 * kernel send buffer is fixed at that (listen sndbuf=, SO_SNDBUF: the kernel doubles it and no
 * longer grows it), so that a download paused downstream holds little in the origin's kernel.
 */
export function originConfig(
  dir: string,
  port: number,
  root: string,
  options: { tls?: TlsFiles; name?: string; sendBufferBytes?: number } = {},
): string {
  const { tls, name = 'origin', sendBufferBytes } = options
  const sndbuf = sendBufferBytes === undefined ? '' : ` sndbuf=${sendBufferBytes}`
  const listen = tls
    ? `listen ${HOST}:${port} ssl${sndbuf};
    ssl_certificate ${tls.certPath};
    ssl_certificate_key ${tls.keyPath};
    ssl_protocols TLSv1.2 TLSv1.3;`
    : `listen ${HOST}:${port}${sndbuf};`
  return mainConfig(
    dir,
    name,
    `  access_log off;
  sendfile on;
  tcp_nopush on;
  types { }
  default_type application/octet-stream;
  server {
    ${listen}
    location /v3/media/ { root ${root}; }
  }`,
  )
}

/**
 * The static files, and copies of them under new ids (bench/cache.ts): /v3/media/<id> whose last
 * group is one of the files' serves that file. Every request is logged, unbuffered, to accessLog,
 * so that what reached the origin can be counted.
 */
export function copiesOriginConfig(
  dir: string,
  name: string,
  port: number,
  root: string,
  ids: readonly string[],
  accessLog: string,
): string {
  const copies = ids.map(
    (id) => `    "~^/v3/media/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-${id.slice(-12)}$" /v3/media/${id};`,
  )
  return mainConfig(
    dir,
    name,
    `  access_log ${accessLog};
  sendfile on;
  tcp_nopush on;
  types { }
  default_type application/octet-stream;
  map $uri $copy_of {
    default /none;
${copies.join('\n')}
  }
  server {
    listen ${HOST}:${port};
    location /v3/media/ { root ${root}; try_files $uri $copy_of =404; }
  }`,
  )
}

/** GET /media/<id> -> origin /v3/media/<id>, one static bearer token, no buffering, keep-alive upstream. */
export function reverseProxyConfig(
  dir: string,
  name: string,
  port: number,
  originPort: number,
  token: string,
  buffers: NginxProxyBuffers,
): string {
  const bufferLines =
    buffers === '64k'
      ? `
      proxy_buffer_size 64k;
      proxy_buffers 8 64k;
      proxy_busy_buffers_size 128k;`
      : ''
  return mainConfig(
    dir,
    name,
    `  access_log ${join(dir, `${name}-access.log`)} combined buffer=64k flush=1s;
  upstream origin {
    server ${HOST}:${originPort};
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen ${HOST}:${port};
    location /media/ {
      proxy_pass http://origin/v3/media/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer ${token}";
      proxy_buffering off;${bufferLines}
    }
  }`,
  )
}

export async function startNginx(
  group: ProcessGroup,
  options: { name: string; dir: string; config: string; port: number; core: number },
): Promise<RunningNginx> {
  const { name, dir, port } = options
  const confPath = join(dir, `${name}.conf`)
  mkdirSync(join(dir, `${name}-temp`), { recursive: true })
  writeFileSync(confPath, options.config)
  const child = group.spawn(name, 'nginx', ['-p', `${dir}/`, '-c', confPath, '-e', join(dir, `${name}-error.log`)], {
    core: options.core,
    stderrFile: join(dir, `${name}-stderr.log`),
    stopSignal: 'SIGTERM',
  })
  await waitForPort(child, port)
  // The worker is forked right after the master binds; give it a moment to appear.
  let workers: number[] = []
  for (let i = 0; i < 40 && workers.length === 0; i++) {
    workers = descendants(child.pid)
    if (workers.length === 0) await new Promise((resolve) => setTimeout(resolve, 25))
  }
  return { child, url: `http://${HOST}:${port}`, pids: [child.pid, ...workers] }
}
