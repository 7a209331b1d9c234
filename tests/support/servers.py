"""Real Prometheus and Alertmanager on loopback for the tests: the launcher ships with the demo
(demo.servers), so one implementation serves both."""

from demo.servers import ALERTMANAGER as ALERTMANAGER
from demo.servers import PROMETHEUS as PROMETHEUS
from demo.servers import Server as Server
from demo.servers import alertmanager as alertmanager
from demo.servers import free_port as free_port
from demo.servers import http_get as http_get
from demo.servers import http_json as http_json
from demo.servers import prometheus as prometheus
from demo.servers import running as running
from demo.servers import wait_until as wait_until
