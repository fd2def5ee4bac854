import subprocess, time
import pytest
from support.mesh import Proxy
from support.process import http_status
pytestmark = [pytest.mark.integration, pytest.mark.slow]
def test_dbg(one_hop: Proxy) -> None:
    for i in range(3):
        print(i, http_status("127.0.0.1", one_hop.admin_port, "/ready"), one_hop.process.alive())
        print([l for l in subprocess.run(["ss","-ltnp"],capture_output=True,text=True).stdout.splitlines() if str(one_hop.admin_port) in l or str(one_hop.outbound_port) in l])
        time.sleep(1)
