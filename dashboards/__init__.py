"""corral's dashboards: `corral top` (tui/), the Grafana dashboard (grafana/corral.json) and
the Prometheus recording and alerting rules (prometheus/rules.yml, with promtool tests in
prometheus/tests/); expressions.py reads the PromQL out of the two files for their tests."""
