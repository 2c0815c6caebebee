# burstgate's decision semantics in Rego: the same engine as src/policy/engine.rs, written by hand
# and proven equal case by case on a random corpus (tests/it/decide_rego.rs, benches/decide.rs).
#
# data.policy is a burstgate policy `spec` exactly as operators write it (the serde model of
# src/policy/model.rs, as JSON); this file does what src/policy/load.rs (units, allow lists,
# defaults) and src/policy/{engine,sizing}.rs do with it. input is one decision:
#   pod:      {namespace, name, labels, annotations, milliCpu, memoryMib, gpus, gpuSku}
#             (the effective request, as src/policy/pod.rs computes it)
#   usage:    {targets: {name: U}, budgets: {name: U}}, U = {milliCpu, memoryMib, pods, hourlyMicros}
#   excluded: [target names kept out from outside: circuit open, provider rejected]
# data.burstgate.decision is the outcome and one verdict per target, in target order.
#
# CEL match expressions: Rego cannot run CEL, so the expressions the corpus uses are listed in
# `expression_true` below, each translated by hand; any other expression never matches.
package burstgate

import rego.v1

spec := data.policy

pod := input.pod

ann := pod.annotations

k_latency := "burstgate.io/max-latency-ms"

k_cost := "burstgate.io/max-hourly-cost"

k_objective := "burstgate.io/objective"

k_providers := "burstgate.io/providers"

k_regions := "burstgate.io/regions"

# ---- units, as load.rs converts them (floor for limits, ceil for per-pod cost caps)

milli(v) := null if v == null

else := floor(v * 1000)

mib(v) := null if v == null

else := floor(v * 1024)

floor_micros(v) := null if v == null

else := floor(v * 1000000)

usd_to_micros(u) := max([ceil((u * 1000000) - 0.000001), 0])

# ---- the rule: the first whose match fits

ns_ok(namespaces) if count(namespaces) == 0

ns_ok(namespaces) if pod.namespace in namespaces

pairs_ok(want, have) if {
	every k, v in want {
		have[k] == v
	}
}

expression_true(e) if e == null

expression_true("pod.gpus > 0") if pod.gpus > 0

expression_true("pod.cpu >= 8.0") if (pod.milliCpu / 1000) >= 8

expression_true("pod.memoryGiB > 32.0") if (pod.memoryMib / 1024) > 32

rule_matches(r) if {
	ns_ok(r.match.namespaces)
	pairs_ok(r.match.labels, pod.labels)
	pairs_ok(r.match.annotations, ann)
	expression_true(r.match.expression)
}

matching := [i | some i, r in spec.rules; rule_matches(r)]

rule_index := matching[0]

has_rule if rule_index != null

rule := spec.rules[rule_index]

# ---- objective and no-target behaviour

objective_of(o) := o if o in {"cost", "latency"}

else := {"cost": o.weights.cost, "latency": o.weights.latency}

defaults := object.get(spec, "defaults", null)

default_objective := objective_of(defaults.objective) if {
	defaults != null
	defaults.objective != null
} else := "cost"

default_on_no_target := defaults.onNoTarget if {
	defaults != null
	defaults.onNoTarget != null
} else := "pending"

base_objective := objective_of(rule.objective) if {
	has_rule
	rule.objective != null
} else := default_objective

on_no_target := rule.onNoTarget if {
	has_rule
	rule.onNoTarget != null
} else := default_on_no_target

# ---- annotations: tighten, never widen; a malformed one fails the pod

# Rust's number parsing takes forms JSON's grammar (which to_number reads) does not: a leading
# '+', leading zeros, ".3", "1."; they are rewritten to JSON's grammar first.
digits_or_zero(d) := "0" if d == ""

else := d

# Rust's u32 parse: an optional '+', digits, at most u32::MAX.
parse_u32(s) := n if {
	regex.match(`^\+?[0-9]+$`, s)
	n := to_number(digits_or_zero(trim_left(trim_prefix(s, "+"), "0")))
	n <= 4294967295
}

fraction(f) := "" if f in {"", "."}

else := f

# A finite, non-negative decimal number, as Rust's f64 parse reads it (the forms without "inf"
# or "nan").
parse_usd(s) := to_number(concat("", [digits_or_zero(trim_left(m[1], "0")), fraction(m[2]), m[3]])) if {
	m := regex.find_all_string_submatch_n(`^\+?([0-9]*)(\.[0-9]*)?([eE][+-]?[0-9]+)?$`, s, 1)[0]
	regex.match(`[0-9]`, concat("", [m[1], m[2]]))
}

ann_latency := parse_u32(trim_space(ann[k_latency]))

ann_cost := parse_usd(trim_space(ann[k_cost]))

last_weight(parts, key) := vs[count(vs) - 1] if {
	vs := [p[1] | some p in parts; p[0] == key]
	count(vs) > 0
} else := 0

parse_objective(s) := s if s in {"cost", "latency"}

else := w if {
	startswith(s, "weights:")
	raw := split(substring(s, 8, -1), ",")
	parts := [[k, v] |
		some part in raw
		i := indexof(part, "=")
		i >= 0
		k := trim_space(substring(part, 0, i))
		k in {"cost", "latency"}
		v := parse_usd(trim_space(substring(part, i + 1, -1)))
	]
	count(parts) == count(raw)
	w := {"cost": last_weight(parts, "cost"), "latency": last_weight(parts, "latency")}
	(w.cost + w.latency) > 0
}

ann_objective := parse_objective(trim_space(ann[k_objective]))

provider_names := {"aci", "fargate", "cluster", "sim"}

ann_providers := ps if {
	ps := [trim_space(p) | some p in split(ann[k_providers], ",")]
	every p in ps {
		p in provider_names
	}
}

ann_regions := [r | some x in split(ann[k_regions], ","); r := trim_space(x); r != ""]

invalid_key := k_latency if {
	ann[k_latency]
	not ann_latency
} else := k_cost if {
	ann[k_cost]
	not ann_cost
} else := k_objective if {
	ann[k_objective]
	not ann_objective
} else := k_providers if {
	ann[k_providers]
	not ann_providers
}

objective := ann_objective if ann[k_objective]

else := base_objective

latency_caps := array.concat(
	[rule.maxLatencyMs | has_rule; rule.maxLatencyMs != null],
	[ann_latency | ann[k_latency]],
)

max_latency := min(latency_caps) if count(latency_caps) > 0

cost_caps := array.concat(
	[usd_to_micros(rule.maxHourlyCost) | has_rule; rule.maxHourlyCost != null],
	[usd_to_micros(ann_cost) | ann[k_cost]],
)

max_cost := min(cost_caps) if count(cost_caps) > 0

# ---- budgets the pod counts against, in policy order

covering := [i | some i, b in spec.budgets; ns_ok(b.namespaces); pairs_ok(b.labels, pod.labels)]

# ---- sizing, as src/policy/sizing.rs

fargate_rows := [
	[250, 512, 2048, 512],
	[500, 1024, 4096, 1024],
	[1000, 2048, 8192, 1024],
	[2000, 4096, 16384, 1024],
	[4000, 8192, 30720, 1024],
	[8000, 16384, 61440, 4096],
	[16000, 32768, 122880, 8192],
]

fargate_size := {"error": ["cpu", pod.milliCpu, 16000]} if {
	pod.milliCpu > 16000
} else := {"cpu": row[0], "mem": row[1] + (ceil((max([pod.memoryMib, row[1]]) - row[1]) / row[3]) * row[3])} if {
	fits := [r | some r in fargate_rows; r[0] >= pod.milliCpu; r[2] >= pod.memoryMib]
	count(fits) > 0
	row := fits[0]
} else := {"error": ["memory", pod.memoryMib, 122880]}

aci_cpu := 1000 if pod.milliCpu == 0

else := ceil(pod.milliCpu / 10) * 10

aci_mem := 1536 if pod.memoryMib == 0

else := ceil((ceil((pod.memoryMib * 10) / 1024) * 1024) / 10)

aci_size := {"error": ["cpu", aci_cpu, 31000]} if {
	aci_cpu > 31000
} else := {"error": ["memory", aci_mem, 245760]} if {
	aci_mem > 245760
} else := {"cpu": aci_cpu, "mem": aci_mem}

plain_size := {"cpu": pod.milliCpu, "mem": pod.memoryMib}

sizes := {"fargate": fargate_size, "aci": aci_size, "cluster": plain_size, "sim": plain_size}

hourly_micros(t, s) := usd_to_micros(((s.cpu / 1000) * t.pricing.vcpuHour) + ((s.mem / 1024) * t.pricing.gibHour))

# ---- the verdict ladder, as engine::judge: cheapest check first, the first refusal wins

allow_rejection(t) := "provider" if {
	rule.allow.providers != null
	not t.provider in rule.allow.providers
} else := "region" if {
	rule.allow.regions != null
	not t.region in rule.allow.regions
} else := "target" if {
	rule.allow.targets != null
	not t.name in rule.allow.targets
} else := "spot" if {
	t.spot
	not rule.allow.spot
}

not_allowed(t) := why if {
	has_rule
	why := allow_rejection(t)
} else := "spot" if {
	not has_rule
	t.spot
}

in_fallback(t) if {
	has_rule
	t.name in rule.fallback
}

excluded := {n | some n in input.excluded}

has_sku(t, sku) if {
	some g in t.limits.gpus
	lower(g) == lower(sku)
}

# Refusals before a size exists.
early(t) := ["not-allowed", why] if {
	why := not_allowed(t)
	not in_fallback(t)
} else := ["annotation", "providers"] if {
	ann[k_providers]
	not t.provider in ann_providers
} else := ["annotation", "regions"] if {
	ann[k_regions]
	not t.region in ann_regions
} else := ["excluded"] if {
	t.name in excluded
} else := ["gpu", "none"] if {
	pod.gpus > 0
	count(t.limits.gpus) == 0
} else := ["gpu", "sku", pod.gpuSku] if {
	pod.gpus > 0
	pod.gpuSku != null
	not has_sku(t, pod.gpuSku)
} else := array.concat(["size"], sizes[t.provider].error)

zero := {"milliCpu": 0, "memoryMib": 0, "pods": 0, "hourlyMicros": 0}

# The first resource (vCPU, memory, pods, cost) the pod would push past a limit.
first_over(u, s, c, limits) := overs[0] if {
	rows := [
		["vcpu", u.milliCpu, s.cpu, limits[0]],
		["memory", u.memoryMib, s.mem, limits[1]],
		["pods", u.pods, 1, limits[2]],
		["cost", u.hourlyMicros, c, limits[3]],
	]
	overs := [r | some r in rows; r[3] != null; (r[1] + r[2]) > r[3]]
	count(overs) > 0
}

quota_over(t, s, c) := first_over(
	object.get(input.usage.targets, t.name, zero),
	s, c,
	[milli(t.quota.vcpu), mib(t.quota.memoryGiB), t.quota.pods, floor_micros(t.quota.hourlyCost)],
)

budget_over(s, c) := hits[0] if {
	hits := [array.concat([b.name], o) |
		some i in covering
		b := spec.budgets[i]
		o := first_over(
			object.get(input.usage.budgets, b.name, zero),
			s, c,
			[milli(b.maxVcpu), mib(b.maxMemoryGiB), null, floor_micros(b.maxHourlyCost)],
		)
	]
	count(hits) > 0
}

# Refusals and verdicts once sized and priced.
late(t, s, c) := ["too-large", "vcpu", s.cpu, limit] if {
	limit := milli(t.limits.maxPodVcpu)
	limit != null
	s.cpu > limit
} else := ["too-large", "memory", s.mem, limit] if {
	limit := mib(t.limits.maxPodMemoryGiB)
	limit != null
	s.mem > limit
} else := ["latency", t.latencyMs, max_latency] if {
	t.latencyMs > max_latency
} else := ["cost", c, max_cost] if {
	c > max_cost
} else := array.concat(["quota"], o) if {
	o := quota_over(t, s, c)
} else := array.concat(["budget"], o) if {
	o := budget_over(s, c)
} else := ["fallback-unused"] if {
	not_allowed(t)
} else := ["eligible"]

row(t) := {"judge": r, "size": null, "micros": null} if {
	r := early(t)
} else := {"judge": late(t, s, c), "size": [s.cpu, s.mem], "micros": c} if {
	s := sizes[t.provider]
	c := hourly_micros(t, s)
}

rows := [row(t) | some t in spec.targets]

# ---- score and choose, as engine::score_and_choose / choose_fallback

eligible := [i | some i, r in rows; r.judge == ["eligible"]]

max_cost_eligible := max([rows[i].micros | some i in eligible])

max_latency_eligible := max([spec.targets[i].latencyMs | some i in eligible])

norm(x, m) := x / m if m > 0

else := 0

score(i) := rows[i].micros / 1000000 if objective == "cost"

else := spec.targets[i].latencyMs if objective == "latency"

else := (objective.cost * norm(rows[i].micros, max_cost_eligible)) + (objective.latency * norm(spec.targets[i].latencyMs, max_latency_eligible))

scores := {i: score(i) | some i in eligible}

# Ties: the other criterion, then the name.
key(i) := [scores[i], rows[i].micros, 0, spec.targets[i].name, i] if objective == "latency"

else := [scores[i], 0, spec.targets[i].latencyMs, spec.targets[i].name, i]

best := min([key(i) | some i in eligible]) if count(eligible) > 0

fallback_ranks := [[rank, i] |
	has_rule
	some rank, name in rule.fallback
	some i, t in spec.targets
	t.name == name
	rows[i].judge == ["fallback-unused"]
]

chosen := {"index": best[4], "score": best[0], "viaFallback": false} if {
	count(eligible) > 0
} else := {"index": fallback_ranks[0][1], "score": fallback_ranks[0][0], "viaFallback": true} if {
	count(fallback_ranks) > 0
}

verdict(i) := {"verdict": "chosen", "score": chosen.score} if {
	chosen.index == i
} else := {"verdict": "eligible", "score": scores[i]} if {
	rows[i].judge == ["eligible"]
} else := {"verdict": "fallback-unused", "score": null} if {
	rows[i].judge == ["fallback-unused"]
} else := {"verdict": "rejected", "score": null}

reason(i) := null if rows[i].judge in {["eligible"], ["fallback-unused"]}

else := rows[i].judge

verdicts := [object.union(
	{"target": t.name, "reason": reason(i), "size": rows[i].size, "micros": rows[i].micros},
	verdict(i),
) |
	some i, t in spec.targets
]

rule_out := rule_index if has_rule

else := null

budget_names := [spec.budgets[i].name | some i in covering]

decision := {
	"outcome": "invalid", "invalid": invalid_key, "rule": rule_out, "objective": base_objective,
	"target": null, "viaFallback": false, "budgets": [], "verdicts": [],
} if {
	invalid_key
} else := {
	"outcome": "placed", "invalid": null, "rule": rule_out, "objective": objective,
	"target": spec.targets[chosen.index].name, "viaFallback": chosen.viaFallback,
	"budgets": budget_names, "verdicts": verdicts,
} if {
	chosen
} else := {
	"outcome": on_no_target, "invalid": null, "rule": rule_out, "objective": objective,
	"target": null, "viaFallback": false, "budgets": [], "verdicts": verdicts,
}
