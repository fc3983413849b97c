"""Alerts (docs/configuration.md "Alerts"): rules over the events as they arrive, and the
delivery of their notices to webhooks and SNS topics.

rules.py parses and checks the `alerts:` and `notify:` keys of logdrc.yml; engine.py
counts matches as events arrive and decides when a rule fires or resolves; notice.py
writes what a notice says; notify.py delivers notices off the ingest path.
"""
