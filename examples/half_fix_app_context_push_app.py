"""The app of half_fix_app_context_push: an application context pushed at import.

Importing this module is the bug, so only the servers of that proof import
it (`flask run` and gunicorn, each in its own process); never import it from
code that serves or tests anything else.
"""

from flask import Flask, g, request

from examples.servers import stamp_worker

app = stamp_worker(Flask(__name__))
# The half-fix: "current_app and g now work everywhere, even outside requests".
# It stays pushed for the life of the importing thread.
app.app_context().push()


@app.get("/greet")
def greet():
    # Load once per request and keep it on g: the pattern of Flask's get_db().
    if "visitor" not in g:
        g.visitor = request.args["name"]
    return {"greeting": f"Hello, {g.visitor}!"}
