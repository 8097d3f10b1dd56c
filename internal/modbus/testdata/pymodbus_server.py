"""A Modbus TCP slave on pymodbus (Debian python3-pymodbus 3.0), for the
driver's interop tests (interop_test.go, SMELTER_INTEROP=1). Our own code:
it only calls the library.

Serves unit 1 on 127.0.0.1, a free port (prints "PORT <n>"): holding
register a holds 1000 + a for a < 200; from 200 on the library raises
exception 2 (illegal data address). Requests for other units are ignored
(no reply), as a gateway's absent slave.
"""
import asyncio
import socket

from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                ModbusSlaveContext)
from pymodbus.server import StartAsyncTcpServer


async def main():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    block = ModbusSequentialDataBlock(0, [1000 + a for a in range(200)])
    unit = ModbusSlaveContext(hr=block, zero_mode=True)
    context = ModbusServerContext(slaves={1: unit}, single=False)
    server = await StartAsyncTcpServer(context=context, address=("127.0.0.1", port),
                                       defer_start=True, ignore_missing_slaves=True)
    print("PORT %d" % port, flush=True)
    await server.serve_forever()


asyncio.run(main())
