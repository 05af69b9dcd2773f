#!/bin/bash
# Step 4 of scripts/deb-check.sh, run INSIDE the check's chroot (its own network and PID
# namespaces): the package's postinst against PostgreSQL and RabbitMQ running on the
# same host, and FCGIApp's migrations on first start. Prints "  ok ..." / "  FAIL ...".
set -uo pipefail
fails=0
ok() { printf '  ok    %s\n' "$*"; }
bad() { printf '  FAIL  %s\n' "$*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
psql_pg() { (cd / && runuser -u postgres -- psql -XAtq "$@"); }
apt() { apt-get -q -y -o Dpkg::Use-Pty=0 -o APT::Install-Recommends=false "$@"; }
conf_key() { sed -n "s/^$1=//p" /etc/swiftchat/swiftchat.conf; }

apt install postgresql rabbitmq-server || { bad "apt-get install postgresql rabbitmq-server"; exit 1; }
# policy-rc.d kept them stopped, and systemd does not run here: start them by hand.
pg_ctlcluster 15 main start || { bad "start PostgreSQL"; exit 1; }
mkdir -p /run/rabbitmq && chown rabbitmq:rabbitmq /run/rabbitmq
runuser -u rabbitmq -- env HOME=/var/lib/rabbitmq RABBITMQ_PID_FILE=/run/rabbitmq/pid \
  /usr/lib/rabbitmq/bin/rabbitmq-server >/tmp/rabbitmq.log 2>&1 &
timeout 120 rabbitmqctl -q wait --timeout 110 /run/rabbitmq/pid >/dev/null 2>&1 ||
  { bad "start RabbitMQ"; tail -n 20 /tmp/rabbitmq.log; exit 1; }
ok "PostgreSQL 15 and RabbitMQ running in the chroot"

apt install /tmp/debs/current.deb >/tmp/install.log 2>&1 || { bad "install with the services running"; cat /tmp/install.log; exit 1; }
ok "install with PostgreSQL and RabbitMQ running: exit 0"
check "postinst created the role swiftchat" test "$(psql_pg -c "SELECT 1 FROM pg_roles WHERE rolname = 'swiftchat'")" = 1
check "postinst created the database swiftchat, owned by the role" \
  test "$(psql_pg -c "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'swiftchat'")" = swiftchat
pass=$(conf_key AMQP_URL | sed -E 's|^amqp://[^:]*:([^@]*)@.*|\1|')
check "postinst created the RabbitMQ user swiftchat with the password of AMQP_URL" \
  rabbitmqctl -q authenticate_user swiftchat "$pass"
check "  ... with rights on /" sh -c "rabbitmqctl -q list_permissions -p / | grep -q '^swiftchat'"

# FCGIApp as its unit runs it (user, config, socket): the migrations apply at start-up.
install -d -o swiftchat -g swiftchat -m 0750 /run/swiftchat
runuser -u swiftchat -- env SWIFTCHAT_CONFIG=/etc/swiftchat/swiftchat.conf FCGI_SOCKET=/run/swiftchat/fcgi-1.sock \
  /usr/lib/swiftchat/bin/FCGIApp >/tmp/fcgiapp.log 2>&1 &
fcgi=$!
for _ in $(seq 1 100); do
  grep -q 'schema ready' /tmp/fcgiapp.log && break
  sleep 0.2
done
check "FCGIApp applied the migrations over peer authentication ('schema ready')" grep -q 'schema ready' /tmp/fcgiapp.log
check "  ... the tables exist (users, rooms, room_members)" \
  test "$(psql_pg -d swiftchat -c "SELECT count(*) FROM pg_tables WHERE tablename IN ('users', 'rooms', 'room_members') AND tableowner = 'swiftchat'")" = 3
kill "$fcgi" 2>/dev/null; wait "$fcgi" 2>/dev/null
grep -q 'schema ready' /tmp/fcgiapp.log || tail -n 20 /tmp/fcgiapp.log

jwt=$(conf_key JWT_SECRET)
apt install --reinstall /tmp/debs/current.deb >/tmp/reinstall.log 2>&1 && ok "reinstall: exit 0" || { bad "reinstall"; cat /tmp/reinstall.log; }
check "reinstall changed no secret" test "$(conf_key JWT_SECRET):$(conf_key AMQP_URL | sed -E 's|^amqp://[^:]*:([^@]*)@.*|\1|')" = "$jwt:$pass"
check "  ... and the RabbitMQ password still matches" rabbitmqctl -q authenticate_user swiftchat "$pass"

apt purge swiftchat >/tmp/purge.log 2>&1 && ok "purge: exit 0" || { bad "purge"; cat /tmp/purge.log; }
check "purge keeps the database (data, not package state)" \
  test "$(psql_pg -c "SELECT 1 FROM pg_database WHERE datname = 'swiftchat'")" = 1

rabbitmqctl -q stop >/dev/null 2>&1
pg_ctlcluster 15 main stop >/dev/null 2>&1
exit $((fails > 0))
