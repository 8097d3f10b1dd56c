/*
 * A Modbus TCP server on libmodbus (https://libmodbus.org) for make
 * bench-peers: the same servers for smelter-gateway and for Telegraf. Our own
 * code: it only calls the library. (internal/modbus/testdata/libmodbus_server.c
 * is the interop test's slave: one client at a time; this one serves many.)
 *
 *   modbus-server REGISTERS
 *
 * Listens on 127.0.0.1, a free port, and prints "PORT <n>" on stdout. Serves
 * any number of connections at once (select), any unit id (Modbus TCP: the
 * unit id is not filtered), holding registers 0..REGISTERS-1 (at most 10000).
 * Holding register a holds 1000 + a + t, where t counts the seconds since the
 * start (mod 1000), so values change once a second. Exits when stdin closes,
 * so it never outlives the driver.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <modbus.h>

int main(int argc, char **argv) {
    int nregs = argc == 2 ? atoi(argv[1]) : 0;
    if (nregs <= 0 || nregs > 10000) {
        fprintf(stderr, "usage: %s REGISTERS (1..10000)\n", argv[0]);
        return 2;
    }
    modbus_mapping_t *map = modbus_mapping_new(0, 0, nregs, 0);
    if (map == NULL) {
        fprintf(stderr, "mapping: %s\n", modbus_strerror(errno));
        return 1;
    }
    modbus_t *ctx = modbus_new_tcp("127.0.0.1", 0);
    int listener = modbus_tcp_listen(ctx, 64);
    if (listener < 0) {
        fprintf(stderr, "listen: %s\n", modbus_strerror(errno));
        return 1;
    }
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    getsockname(listener, (struct sockaddr *)&sa, &len);
    printf("PORT %d\n", ntohs(sa.sin_port));
    fflush(stdout);

    fd_set all;
    FD_ZERO(&all);
    FD_SET(listener, &all);
    FD_SET(STDIN_FILENO, &all);
    int maxfd = listener > STDIN_FILENO ? listener : STDIN_FILENO;
    time_t start = time(NULL), shown = -1;
    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    for (;;) {
        fd_set ready = all;
        if (select(maxfd + 1, &ready, NULL, NULL, NULL) < 0) {
            if (errno == EINTR) {
                continue;
            }
            perror("select");
            return 1;
        }
        time_t t = (time(NULL) - start) % 1000;
        if (t != shown) {
            for (int a = 0; a < nregs; a++) {
                map->tab_registers[a] = (uint16_t)(1000 + a + t);
            }
            shown = t;
        }
        for (int fd = 0; fd <= maxfd; fd++) {
            if (!FD_ISSET(fd, &ready)) {
                continue;
            }
            if (fd == STDIN_FILENO) {
                char buf[64];
                if (read(fd, buf, sizeof(buf)) <= 0) {
                    return 0; /* the driver is gone */
                }
                continue;
            }
            if (fd == listener) {
                struct sockaddr_in ca;
                socklen_t clen = sizeof(ca);
                int c = accept(listener, (struct sockaddr *)&ca, &clen);
                if (c < 0) {
                    continue;
                }
                if (c >= FD_SETSIZE) {
                    close(c);
                    continue;
                }
                FD_SET(c, &all);
                if (c > maxfd) {
                    maxfd = c;
                }
                continue;
            }
            modbus_set_socket(ctx, fd);
            int n = modbus_receive(ctx, query);
            if (n > 0) {
                modbus_reply(ctx, query, n, map);
            } else if (n == -1) {
                close(fd); /* client gone */
                FD_CLR(fd, &all);
            }
        }
    }
}
