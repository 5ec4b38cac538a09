"""Cost model: energy, money and carbon of serving transformer models.

The offline half (``jouled model flops|fit|predict|validate``) reproduces and extends the
thesis's FLOPs-based energy model: analytic FLOPs from a Hugging Face ``config.json``, fits of
measured joules against work, and deployment predictions (kWh, money, gCO2e). This package
module stays import-light: numpy, pandas, scipy and matplotlib load only inside the commands
that need them, never when the daemon imports ``jouled.costmodel.fitfile`` or ``hardware``.
"""
