#!/bin/sh
# What this nginx build supports, as the values of three template placeholders:
#   TLS_CURVES=pq|classic     pq: nginx runs on OpenSSL >= 3.5, which has X25519MLKEM768
#   HTTP_PROTOCOLS=h3|h2|h2-legacy
#                             h3: built --with-http_v3_module; h2: nginx >= 1.25.1 without it
#                             ("http2 on;"); h2-legacy: older nginx ("listen ... http2")
#   BROTLI_STATIC=on|off      the ngx_http_brotli_static module is loaded
# Run it to print KEY=VALUE lines (the Ansible nginx role does), or source it to export them:
# the official nginx image sources /docker-entrypoint.d/*.envsh before rendering its templates.
# POSIX sh without `set -e`, and only fsdetect_* helper names: a sourcing shell keeps its state.

fsdetect_info=$(nginx -V 2>&1)

# A dotted version as one comparable number: 1.25.1 -> 1025001.
fsdetect_number() {
    printf '%s\n' "$1" | awk -F. '{ printf "%d%03d%03d\n", $1, $2, $3 }'
}

# "running with OpenSSL x.y.z" appears when the library differs from the one nginx was built with.
fsdetect_openssl=$(printf '%s\n' "$fsdetect_info" \
    | sed -n -e 's/.*running with OpenSSL \([0-9][0-9.]*\).*/\1/p' \
        -e 's/.*built with OpenSSL \([0-9][0-9.]*\).*/\1/p' | head -n 1)
if [ "$(fsdetect_number "${fsdetect_openssl:-0}")" -ge 3005000 ]; then
    TLS_CURVES=pq
else
    TLS_CURVES=classic
fi

fsdetect_nginx=$(printf '%s\n' "$fsdetect_info" \
    | sed -n -e 's|^nginx version: [^/]*/\([0-9][0-9.]*\).*|\1|p')
case "$fsdetect_info" in
    *--with-http_v3_module*) HTTP_PROTOCOLS=h3 ;;
    *)
        if [ "$(fsdetect_number "${fsdetect_nginx:-0}")" -ge 1025001 ]; then
            HTTP_PROTOCOLS=h2
        else
            HTTP_PROTOCOLS=h2-legacy
        fi
        ;;
esac

# Debian loads dynamic modules from modules-enabled/; a static build names it in nginx -V.
BROTLI_STATIC=off
if grep -qs ngx_http_brotli_static_module /etc/nginx/modules-enabled/*.conf /etc/nginx/nginx.conf
then
    BROTLI_STATIC=on
fi
case "$fsdetect_info" in *brotli*) BROTLI_STATIC=on ;; esac

export TLS_CURVES HTTP_PROTOCOLS BROTLI_STATIC
unset fsdetect_info fsdetect_openssl fsdetect_nginx
unset -f fsdetect_number
printf 'TLS_CURVES=%s\nHTTP_PROTOCOLS=%s\nBROTLI_STATIC=%s\n' \
    "$TLS_CURVES" "$HTTP_PROTOCOLS" "$BROTLI_STATIC"
