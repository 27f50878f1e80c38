"""The HTTP interface: :mod:`.routes` (one module per resource), :mod:`.deps` (what a route is
given: the counter, the settings, the inference gate, the model description) and :mod:`.main`
(the routers together). Routes hold no state: what one app serves lives on ``app.state``.
"""
