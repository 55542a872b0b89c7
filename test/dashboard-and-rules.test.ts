// Proves the Grafana dashboard and the Prometheus alert rules query only metrics the proxy exposes (with a cache, so
// that its series are there too), and that promtool accepts and unit-tests the rules.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type TestContext, test } from 'node:test'
import { request } from 'undici'
import { parseAllDocuments, parse as parseYaml } from 'yaml'
import { startEmulator, startProxy } from './helpers.js'

const ROOT = new URL('../', import.meta.url)
const DASHBOARD = new URL('deploy/grafana/vonage-media-proxy.json', ROOT)
const ALERTS = new URL('deploy/prometheus/alerts.yml', ROOT)
const ALERT_TESTS = new URL('deploy/prometheus/alerts.test.yml', ROOT)
const PROMETHEUS_CONFIG = new URL('deploy/prometheus/prometheus.yml', ROOT)
const KUBERNETES_EXAMPLE = new URL('deploy/kubernetes/deployment.yaml', ROOT)

/** Series Prometheus makes up itself for every scrape target; never in /metrics. */
const SYNTHETIC_SERIES = new Set(['up'])
/** Words of PromQL that look like metric names. */
const PROMQL_KEYWORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'and',
  'or',
  'unless',
  'bool',
  'offset',
  'inf',
  'nan',
])

/** Each panel the dashboard must have, and a metric it must query. */
const REQUIRED_PANELS: Record<string, string> = {
  'Request rate by status': 'media_proxy_requests_total',
  'Error ratio': 'media_proxy_requests_total',
  'Request duration percentiles': 'media_proxy_request_duration_seconds_bucket',
  'Upstream latency percentiles': 'media_proxy_upstream_latency_seconds_bucket',
  'Bytes sent per second': 'media_proxy_response_bytes_total',
  'In-flight requests': 'media_proxy_in_flight_requests',
  'Upstream retries by reason': 'media_proxy_upstream_retries_total',
  'Upstream requests by host': 'media_proxy_upstream_latency_seconds_count',
  'Token expiry countdown': 'media_proxy_token_expiry_timestamp_seconds',
  'Token refresh failures': 'media_proxy_token_refreshes_total',
  'Key reloads by application and result': 'media_proxy_key_reloads_total',
  'Applications loaded': 'media_proxy_applications_loaded',
  'Process memory': 'process_resident_memory_bytes',
  'Process CPU': 'process_cpu_seconds_total',
  'Event loop lag': 'nodejs_eventloop_lag_p99_seconds',
  'Cache hit ratio': 'media_proxy_cache_requests_total',
  'Cache requests by result': 'media_proxy_cache_requests_total',
  'Cache size': 'media_proxy_cache_stored_bytes',
  'Cache evictions': 'media_proxy_cache_evictions_total',
  'Cache write failures': 'media_proxy_cache_write_failures_total',
}

const REQUIRED_ALERTS = [
  'MediaProxyDown',
  'MediaProxyTokenRefreshFailing',
  'MediaProxyTokenExpiringSoon',
  'MediaProxyHighErrorRatio',
  'MediaProxyUpstreamLatencyHigh',
  'MediaProxyInFlightNearLimit',
  'MediaProxyKeyReloadRefused',
  'MediaProxyCacheCannotStore',
]

/** Panels and alerts about each Vonage application: they keep the `application` label apart. */
const PER_APPLICATION_PANELS = [
  'Token expiry countdown',
  'Token refresh failures',
  'Key reloads by application and result',
]
const PER_APPLICATION_ALERTS = [
  'MediaProxyTokenRefreshFailing',
  'MediaProxyTokenExpiringSoon',
  'MediaProxyKeyReloadRefused',
]

interface Panel {
  id: number
  type: string
  title: string
  datasource?: { type: string; uid: string }
  gridPos?: { h: number; w: number; x: number; y: number }
  targets?: Array<{ expr: string; legendFormat?: string; datasource?: { uid: string } }>
  panels?: Panel[]
}

interface Dashboard {
  title: string
  uid: string
  panels: Panel[]
  templating: { list: Array<{ name: string; type: string; query: unknown; includeAll?: boolean; allValue?: string }> }
}

interface AlertRule {
  alert?: string
  record?: string
  expr: string
  labels?: Record<string, string>
  annotations?: Record<string, string>
}

/** The metric names a PromQL expression selects: functions, keywords, labels, strings and durations left out. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/gi, ' ')
    .replace(/\$\{[^}]*\}|\$\w+/g, ' ')
  const names = new Set<string>()
  for (const match of bare.matchAll(/(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    const name = match[1] as string
    if (match[2] || PROMQL_KEYWORDS.has(name.toLowerCase())) continue
    names.add(name)
  }
  return [...names]
}

/** The metric families of a live proxy's /metrics, with their types: a proxy with a cache, which adds its series. */
async function exposedFamilies(t: TestContext): Promise<Map<string, string>> {
  const emulator = await startEmulator(t)
  const cacheDir = mkdtempSync(join(tmpdir(), 'dashboard-cache-'))
  t.after(() => rmSync(cacheDir, { recursive: true, force: true }))
  const proxy = await startProxy(t, emulator.url, { CACHE_DIR: cacheDir })
  const res = await request(`${proxy.adminUrl}/metrics`)
  assert.equal(res.statusCode, 200)
  const families = new Map<string, string>()
  for (const [, name, type] of (await res.body.text()).matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    families.set(name as string, type as string)
  }
  return families
}

/** Whether a queried name is exposed: as a family, or as a histogram/summary's _bucket, _sum or _count series. */
function isExposed(name: string, families: Map<string, string>): boolean {
  if (families.has(name) || SYNTHETIC_SERIES.has(name)) return true
  const suffix = /^(.+)_(bucket|sum|count)$/.exec(name)
  if (!suffix) return false
  const type = families.get(suffix[1] as string)
  return type === 'histogram' || (type === 'summary' && suffix[2] !== 'bucket')
}

function loadDashboard(): Dashboard {
  return JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard
}

function loadAlertRules(): AlertRule[] {
  const file = parseYaml(readFileSync(ALERTS, 'utf8')) as { groups: Array<{ rules: AlertRule[] }> }
  return file.groups.flatMap((group) => group.rules)
}

function panelsOf(dashboard: Dashboard): Panel[] {
  return dashboard.panels.flatMap((panel) => [panel, ...(panel.panels ?? [])]).filter((panel) => panel.type !== 'row')
}

/** Every PromQL expression of the dashboard: panel targets, and the metric inside label_values() variables. */
function dashboardExpressions(dashboard: Dashboard): string[] {
  const expressions = panelsOf(dashboard).flatMap((panel) => (panel.targets ?? []).map((target) => target.expr))
  for (const variable of dashboard.templating.list) {
    if (variable.type !== 'query') continue
    const query = typeof variable.query === 'string' ? variable.query : (variable.query as { query: string }).query
    const labelValues = /^label_values\((.+),\s*\w+\)$/.exec(query.trim())
    expressions.push(labelValues ? (labelValues[1] as string) : query)
  }
  return expressions
}

function promtool(t: TestContext, ...args: string[]): { status: number | null; output: string } | undefined {
  if (spawnSync('promtool', ['--version']).error) {
    t.skip('promtool not installed (Debian package "prometheus"; .ci/run installs it)')
    return undefined
  }
  const result = spawnSync('promtool', args, { cwd: ROOT, encoding: 'utf8' })
  return { status: result.status, output: `${result.stdout}${result.stderr}` }
}

test('metric names are read out of PromQL as intended', () => {
  assert.deepEqual(
    metricNames(
      'histogram_quantile(0.99, sum by (le, job) (rate(media_proxy_upstream_latency_seconds_bucket{job="$job", status=~"5.."}[$__rate_interval])))',
    ),
    ['media_proxy_upstream_latency_seconds_bucket'],
  )
  assert.deepEqual(metricNames('media_proxy_token_expiry_timestamp_seconds - time() < 120'), [
    'media_proxy_token_expiry_timestamp_seconds',
  ])
  assert.deepEqual(metricNames('sum(rate(a_total[5m] offset 1h)) / on (instance) group_left b > 1e3 and bool c'), [
    'a_total',
    'b',
    'c',
  ])
})

test('every metric the dashboard and the alert rules query is in /metrics', async (t) => {
  const families = await exposedFamilies(t)
  const queried = new Map<string, string>()
  for (const expr of dashboardExpressions(loadDashboard()))
    for (const name of metricNames(expr)) queried.set(name, expr)
  for (const rule of loadAlertRules()) for (const name of metricNames(rule.expr)) queried.set(name, rule.expr)

  assert.ok(queried.size > 10, `only ${queried.size} metric names found`)
  const missing = [...queried]
    .filter(([name]) => !isExposed(name, families))
    .map(([name, expr]) => `${name} (in ${expr})`)
  assert.deepEqual(missing, [])
})

test('the dashboard is importable Grafana JSON with the expected panels and a datasource variable', () => {
  const dashboard = loadDashboard()
  assert.equal(dashboard.uid, 'vonage-media-proxy')
  const datasource = dashboard.templating.list.find((variable) => variable.type === 'datasource')
  assert.ok(datasource, 'a datasource template variable')
  assert.equal(datasource.query, 'prometheus')
  const reference = `\${${datasource.name}}`

  const panels = panelsOf(dashboard)
  const ids = dashboard.panels.flatMap((panel) => [panel, ...(panel.panels ?? [])]).map((panel) => panel.id)
  assert.equal(new Set(ids).size, ids.length, 'panel ids are unique')
  for (const panel of panels) {
    assert.ok(panel.gridPos, `${panel.title} has a position`)
    assert.equal(panel.datasource?.uid, reference, `${panel.title} uses the datasource variable`)
    assert.ok(panel.targets && panel.targets.length > 0, `${panel.title} has queries`)
    for (const target of panel.targets) {
      assert.equal(target.datasource?.uid ?? reference, reference, `${panel.title} query datasource`)
      assert.ok(target.expr.trim() !== '', `${panel.title} has an empty query`)
    }
  }
  for (const [title, metric] of Object.entries(REQUIRED_PANELS)) {
    const panel = panels.find((candidate) => candidate.title === title)
    assert.ok(panel, `panel "${title}"`)
    const names = (panel.targets ?? []).flatMap((target) => metricNames(target.expr))
    assert.ok(names.includes(metric), `panel "${title}" queries ${metric}; it queries ${names.join(', ')}`)
  }
  const refreshes = panels.find((panel) => panel.title === 'Token refresh failures')
  assert.ok(refreshes?.targets?.some((target) => target.expr.includes('result="failure"')))
})

test("the cache size panel draws each instance's CACHE_MAX_BYTES from media_proxy_cache_max_bytes", () => {
  const dashboard = loadDashboard()
  assert.ok(!dashboard.templating.list.some((candidate) => candidate.name === 'cache_max_bytes'), 'no typed-in copy')
  const size = panelsOf(dashboard).find((panel) => panel.title === 'Cache size')
  assert.ok(
    size?.targets?.some((target) => /\bmedia_proxy_cache_max_bytes\b/.test(target.expr)),
    'the Cache size panel draws the limit the proxy exports',
  )
  const row = dashboard.panels.find((panel) => panel.type === 'row' && panel.title === 'Cache')
  assert.ok(row, 'a Cache row')
})

test('every alert has a severity, a summary, a description and a runbook, and unit tests firing and silent', () => {
  const alerts = loadAlertRules().filter((rule) => rule.alert)
  const names = alerts.map((rule) => rule.alert as string)
  for (const name of REQUIRED_ALERTS) assert.ok(names.includes(name), `alert ${name}`)
  for (const rule of alerts) {
    assert.match(rule.labels?.severity ?? '', /^(critical|warning)$/, `${rule.alert} severity`)
    for (const annotation of ['summary', 'description', 'runbook']) {
      assert.ok(rule.annotations?.[annotation]?.trim(), `${rule.alert} has a ${annotation}`)
    }
  }

  const unitTests = parseYaml(readFileSync(ALERT_TESTS, 'utf8')) as {
    tests: Array<{ alert_rule_test?: Array<{ alertname: string; exp_alerts?: unknown[] }> }>
  }
  const cases = unitTests.tests.flatMap((unit) => unit.alert_rule_test ?? [])
  for (const name of names) {
    const own = cases.filter((testCase) => testCase.alertname === name)
    assert.ok(
      own.some((testCase) => (testCase.exp_alerts ?? []).length > 0),
      `alerts.test.yml expects ${name} to fire`,
    )
    assert.ok(
      own.some((testCase) => (testCase.exp_alerts ?? []).length === 0),
      `alerts.test.yml expects ${name} to stay silent`,
    )
  }
})

/** Label matchers of an expression's selectors, as [metric, label, operator, value]. */
function matchers(expr: string): Array<[string, string, string, string]> {
  const found: Array<[string, string, string, string]> = []
  for (const [, metric = '', body = ''] of expr.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)?\{([^}]*)\}/g)) {
    for (const [, label = '', op = '', value = ''] of body.matchAll(/(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g)) {
      found.push([metric, label, op, value])
    }
  }
  return found
}

test('the alerts recognise a proxy in both scrape styles: the static job and annotated Kubernetes pods', () => {
  const rules = loadAlertRules()
  // The job is vonage-media-proxy in prometheus.yml but usually kubernetes-pods for annotated pods.
  for (const rule of rules) {
    assert.ok(
      !matchers(rule.expr).some(([, label]) => label === 'job'),
      `${rule.alert}: selects by job, which differs between scrape styles: ${rule.expr}`,
    )
  }
  // A target that is down exports nothing but `up`: those rules need a label both styles set.
  const upRules = rules.filter((rule) => metricNames(rule.expr).includes('up'))
  assert.ok(upRules.length >= 2, 'MediaProxyDown and MediaProxyTargetMissing look at up')
  const upMatchers = upRules.map((rule) => {
    const own = matchers(rule.expr).filter(([metric, , op]) => metric === 'up' && op === '=')
    assert.equal(own.length, 1, `${rule.alert}: up is selected by one target label: ${rule.expr}`)
    return own[0] as [string, string, string, string]
  })
  const [, label, , value] = upMatchers[0] as [string, string, string, string]
  for (const [, otherLabel, , otherValue] of upMatchers) assert.deepEqual([otherLabel, otherValue], [label, value])

  // prometheus.yml's static job adds it to its targets...
  const config = parseYaml(readFileSync(PROMETHEUS_CONFIG, 'utf8')) as {
    scrape_configs: Array<{ job_name: string; static_configs?: Array<{ labels?: Record<string, string> }> }>
  }
  const staticJob = config.scrape_configs.find((scrape) => scrape.job_name === 'vonage-media-proxy')
  assert.ok(staticJob?.static_configs?.length, 'prometheus.yml has a static vonage-media-proxy job')
  for (const group of staticJob.static_configs) {
    assert.equal(group.labels?.[label], value, `prometheus.yml's targets carry ${label}="${value}"`)
  }
  // ...and the Kubernetes example's pods carry it as a pod label, which the usual kubernetes-pods
  // job copies to the target (labelmap of __meta_kubernetes_pod_label_(.+), which sanitises the name).
  const deployment = parseAllDocuments(readFileSync(KUBERNETES_EXAMPLE, 'utf8'))
    .map(
      (doc) =>
        doc.toJS() as { kind?: string; spec?: { template?: { metadata?: { labels?: Record<string, string> } } } },
    )
    .find((doc) => doc.kind === 'Deployment')
  const podLabels = deployment?.spec?.template?.metadata?.labels ?? {}
  const mapped = Object.entries(podLabels).find(([key]) => key.replace(/[^a-zA-Z0-9_]/g, '_') === label)
  assert.ok(mapped, `deployment.yaml's pod template has a label that labelmap turns into ${label}`)
  assert.equal(String(mapped[1]), value, `pod label ${mapped[0]}: "${value}"`)

  // alerts.test.yml exercises both styles.
  const unitTests = readFileSync(ALERT_TESTS, 'utf8')
  for (const job of ['vonage-media-proxy', 'kubernetes-pods']) {
    assert.ok(unitTests.includes(`job="${job}"`), `alerts.test.yml has series of job ${job}`)
  }
})

test('the dashboard shows proxies only, whatever the job: All stands for the proxies, not every target', () => {
  const dashboard = loadDashboard()
  const instance = dashboard.templating.list.find((variable) => variable.name === 'instance')
  assert.ok(instance, 'an instance variable')
  const query = typeof instance.query === 'string' ? instance.query : (instance.query as { query: string }).query
  assert.match(query, /^label_values\(media_proxy_build_info\b/, 'instances are the targets exporting build info')
  // A kubernetes-pods job scrapes every annotated pod: a catch-all All would bring in their
  // process_* and nodejs_* series. Without allValue, Grafana sends All as the listed instances.
  assert.ok(
    !instance.includeAll || instance.allValue === undefined || instance.allValue === '',
    `instance's All is ${instance.allValue}, not the proxies`,
  )
  const job = dashboard.templating.list.find((variable) => variable.name === 'job')
  const jobQuery = typeof job?.query === 'string' ? job.query : (job?.query as { query: string } | undefined)?.query
  assert.match(jobQuery ?? '', /^label_values\(media_proxy_build_info\b/, 'jobs are those of the proxies')

  for (const expr of dashboardExpressions(dashboard)) {
    for (const [, label, , value] of matchers(expr)) {
      if (label === 'job') assert.equal(value, '$job', `no job is hard-coded: ${expr}`)
    }
    for (const name of metricNames(expr)) {
      if (name.startsWith('media_proxy_')) continue
      const own = matchers(expr).filter(([metric]) => metric === name)
      assert.ok(
        own.some(([, label, op, value]) => label === 'instance' && op === '=~' && value === '$instance'),
        `${name} is not only the proxies' unless restricted to $instance: ${expr}`,
      )
    }
  }
})

test('promtool check rules accepts alerts.yml', (t) => {
  const result = promtool(t, 'check', 'rules', 'deploy/prometheus/alerts.yml')
  if (result) assert.equal(result.status, 0, result.output)
})

test('promtool test rules passes alerts.test.yml', (t) => {
  const result = promtool(t, 'test', 'rules', 'deploy/prometheus/alerts.test.yml')
  if (result) assert.equal(result.status, 0, result.output)
})

test('promtool check config accepts prometheus.yml, which scrapes job vonage-media-proxy and loads the alerts', (t) => {
  const config = parseYaml(readFileSync(PROMETHEUS_CONFIG, 'utf8')) as {
    rule_files: string[]
    scrape_configs: Array<{ job_name: string; metrics_path?: string }>
  }
  assert.deepEqual(config.rule_files, ['alerts.yml'])
  const job = config.scrape_configs.find((scrape) => scrape.job_name === 'vonage-media-proxy')
  assert.ok(job, 'a vonage-media-proxy scrape job')
  assert.equal(job.metrics_path ?? '/metrics', '/metrics')
  const result = promtool(t, 'check', 'config', 'deploy/prometheus/prometheus.yml')
  if (result) assert.equal(result.status, 0, result.output)
})

/** The label lists of every `by (...)` and `without (...)` in an expression. */
function groupings(expr: string): Array<{ kind: 'by' | 'without'; labels: string[] }> {
  return [...expr.matchAll(/\b(by|without)\s*\(([^)]*)\)/g)].map(([, kind, labels = '']) => ({
    kind: kind as 'by' | 'without',
    labels: labels
      .split(',')
      .map((label) => label.trim())
      .filter((label) => label !== ''),
  }))
}

test('the credentials panels show each Vonage application apart, with an application filter', () => {
  const dashboard = loadDashboard()
  const variable = dashboard.templating.list.find((candidate) => candidate.name === 'application')
  assert.ok(variable, 'an application variable')
  const query = typeof variable.query === 'string' ? variable.query : (variable.query as { query: string }).query
  assert.match(query, /^label_values\(media_proxy_\w+\{[^}]*\},\s*application\)$/, 'applications come from the metrics')
  // All must also cover series without the label (a proxy of an earlier version).
  assert.ok(variable.includeAll && variable.allValue === '.*', `application's All is ${variable.allValue}`)

  const panels = panelsOf(dashboard)
  for (const title of PER_APPLICATION_PANELS) {
    const panel = panels.find((candidate) => candidate.title === title)
    assert.ok(panel?.targets?.length, `panel "${title}"`)
    for (const target of panel.targets) {
      const by = groupings(target.expr).filter((grouping) => grouping.kind === 'by')
      assert.ok(by.length > 0, `${title}: aggregates by application: ${target.expr}`)
      for (const grouping of by) assert.ok(grouping.labels.includes('application'), `${title}: ${target.expr}`)
      assert.match(target.legendFormat ?? '', /\{\{application\}\}/, `${title}: the legend names the application`)
      const filters = matchers(target.expr).filter(([metric]) => metric.startsWith('media_proxy_'))
      assert.ok(filters.length > 0, `${title} selects media_proxy_ series`)
      for (const metric of new Set(filters.map(([name]) => name))) {
        assert.ok(
          filters.some(
            ([name, label, op, value]) =>
              name === metric && label === 'application' && op === '=~' && value === '$application',
          ),
          `${title}: ${metric} is filtered by $application: ${target.expr}`,
        )
      }
    }
  }
})

test('the token and key alerts name the failing application, and only it', () => {
  const rules = loadAlertRules()
  for (const name of PER_APPLICATION_ALERTS) {
    const rule = rules.find((candidate) => candidate.alert === name)
    assert.ok(rule, `alert ${name}`)
    for (const grouping of groupings(rule.expr)) {
      // on/ignoring lists of a binary operator are not aggregations: groupings() reads by/without only.
      assert.ok(
        grouping.kind === 'without' && !grouping.labels.includes('application'),
        `${name} must keep the application label: ${rule.expr}`,
      )
    }
    for (const annotation of ['summary', 'description']) {
      assert.match(rule.annotations?.[annotation] ?? '', /\{\{ \$labels\.application \}\}/, `${name}'s ${annotation}`)
    }
  }

  // alerts.test.yml: two applications on one proxy, one failing; the alert names that one.
  const unitTests = parseYaml(readFileSync(ALERT_TESTS, 'utf8')) as {
    tests: Array<{
      name: string
      input_series: Array<{ series: string }>
      alert_rule_test?: Array<{ alertname: string; exp_alerts?: Array<{ exp_labels: Record<string, string> }> }>
    }>
  }
  const labelsOf = (series: string) =>
    Object.fromEntries([...series.matchAll(/(\w+)="([^"]*)"/g)].map(([, label, value]) => [label, value]))
  for (const name of PER_APPLICATION_ALERTS) {
    const tested = unitTests.tests.filter((unit) =>
      (unit.alert_rule_test ?? []).some(
        (testCase) => testCase.alertname === name && (testCase.exp_alerts ?? []).length > 0,
      ),
    )
    const shown = tested.some((unit) => {
      const firing = (unit.alert_rule_test ?? [])
        .filter((testCase) => testCase.alertname === name)
        .flatMap((testCase) => testCase.exp_alerts ?? [])
      if (firing.some((alert) => !alert.exp_labels.application)) return false
      return firing.every((alert) => {
        const { instance, application } = alert.exp_labels
        const applications = new Set(
          unit.input_series
            .map(({ series }) => labelsOf(series))
            .filter((labels) => labels.instance === instance)
            .map((labels) => labels.application),
        )
        const named = new Set(
          firing.filter((a) => a.exp_labels.instance === instance).map((a) => a.exp_labels.application),
        )
        // Another application on the same proxy, which the alert leaves out.
        return applications.has(application) && [...applications].some((other) => other && !named.has(other))
      })
    })
    assert.ok(shown, `alerts.test.yml fires ${name} for one of two applications on a proxy, naming it`)
  }
})
