/*
 * A Modbus slave on libmodbus (https://libmodbus.org), for the driver's
 * interop test (interop_test.go, SMELTER_INTEROP=1). Our own code: it only
 * calls the library.
 *
 *   libmodbus_server tcp          listens on 127.0.0.1, a free port; prints "PORT <n>"
 *   libmodbus_server rtu DEVICE   serves unit 3 on DEVICE at 115200 8E1; prints "READY"
 *
 * Holding register a holds 1000 + a, input register a holds 30000 + a, for
 * a < 200; coil a is a % 3 == 0. Addresses from 200 on raise exception 2
 * (illegal data address), as libmodbus does for what its mapping lacks.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <modbus.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s tcp | rtu DEVICE\n", argv[0]);
        return 2;
    }
    modbus_mapping_t *map = modbus_mapping_new(200, 0, 200, 200);
    if (map == NULL) {
        fprintf(stderr, "mapping: %s\n", modbus_strerror(errno));
        return 1;
    }
    for (int a = 0; a < 200; a++) {
        map->tab_registers[a] = 1000 + a;
        map->tab_input_registers[a] = 30000 + a;
        map->tab_bits[a] = a % 3 == 0;
    }
    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    if (strcmp(argv[1], "tcp") == 0) {
        modbus_t *ctx = modbus_new_tcp("127.0.0.1", 0);
        int s = modbus_tcp_listen(ctx, 1);
        if (s < 0) {
            fprintf(stderr, "listen: %s\n", modbus_strerror(errno));
            return 1;
        }
        struct sockaddr_in sa;
        socklen_t len = sizeof(sa);
        getsockname(s, (struct sockaddr *)&sa, &len);
        printf("PORT %d\n", ntohs(sa.sin_port));
        fflush(stdout);
        for (;;) {
            if (modbus_tcp_accept(ctx, &s) < 0) {
                return 1;
            }
            for (;;) {
                int n = modbus_receive(ctx, query);
                if (n > 0) {
                    modbus_reply(ctx, query, n, map);
                } else if (n == -1) {
                    break; /* client gone: accept the next one */
                }
            }
            modbus_close(ctx);
        }
    }
    if (strcmp(argv[1], "rtu") == 0 && argc == 3) {
        modbus_t *ctx = modbus_new_rtu(argv[2], 115200, 'E', 8, 1);
        modbus_set_slave(ctx, 3);
        if (modbus_connect(ctx) < 0) {
            fprintf(stderr, "open %s: %s\n", argv[2], modbus_strerror(errno));
            return 1;
        }
        printf("READY\n");
        fflush(stdout);
        for (;;) {
            int n = modbus_receive(ctx, query);
            if (n > 0) {
                modbus_reply(ctx, query, n, map);
            }
        }
    }
    fprintf(stderr, "usage: %s tcp | rtu DEVICE\n", argv[0]);
    return 2;
}
