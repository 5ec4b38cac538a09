"""``jouled loadgen``: the thesis's request scenarios, and open- and closed-loop load.

A *scenario* is one of the thesis's three request patterns (its Appendix A script): (1) 500
requests of one text, each followed by a pause of 1-1000 ms; (2) 10 requests of 10 texts,
2 s apart; (3) one request of 500 texts. A request body is ``{"instances": [{"text": ...}]}``
and texts are drawn with a seeded generator. *Open loop* sends at Poisson arrival times
whatever the server's latency; *closed loop* keeps N requests in flight. With ``--jouled``
the run ends with joules per request and per text, read from jouled's own counters.

Modules: ``scenarios`` (the request plans), ``driver`` (sending them, the summary),
``readout`` (joules from jouled's counters before and after), ``cli`` (the command).
"""
