"""``python -m rerankd.api [--host H] [--port P]``: serve the API with uvicorn.

uvicorn runs the protocol of :func:`rerankd.api.protocol.http_protocol` (its own, but refusing a
malformed request in the API's error shape); every launcher starts the API through this module.
"""

from __future__ import annotations

import argparse
import logging

from rerankd.config import get_settings
from rerankd.extras import require


def main(argv: list[str] | None = None) -> None:
    require("service", "the API")
    import uvicorn

    from rerankd.api.app import create_app
    from rerankd.api.protocol import http_protocol

    s = get_settings()
    parser = argparse.ArgumentParser(prog="python -m rerankd.api", description="Serve the rerankd API.")
    parser.add_argument("--host", default=s.api_host, help="bind address (RERANKD_API_HOST)")
    parser.add_argument("--port", type=int, default=s.api_port, help="port (RERANKD_API_PORT)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--no-access-log", action="store_true", help="do not log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=s.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.workers > 1:
        uvicorn.run(
            "rerankd.api.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            http=http_protocol(),
            access_log=not args.no_access_log,
            log_level=s.log_level.lower(),
        )
    else:
        uvicorn.run(
            create_app(s),
            http=http_protocol(),
            host=args.host,
            port=args.port,
            access_log=not args.no_access_log,
            log_level=s.log_level.lower(),
        )


if __name__ == "__main__":
    main()
