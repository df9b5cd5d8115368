"""Where `serve` points its links without PUBLIC_BASE_URL, and the port check before it starts anything."""

from __future__ import annotations

import socket

import pytest

from service.listen import ListenError, check_listenable, listen_url
from service.settings import load_settings


@pytest.mark.parametrize(("host", "port", "url"), [
    ("127.0.0.1", 8081, "http://127.0.0.1:8081"),
    ("0.0.0.0", 8080, "http://127.0.0.1:8080"),
    ("", 9000, "http://127.0.0.1:9000"),
    ("::", 8080, "http://[::1]:8080"),
    ("::1", 8082, "http://[::1]:8082"),
    ("localhost", 8083, "http://localhost:8083"),
])
def test_listen_url(host, port, url):
    assert listen_url(host, port) == url


@pytest.mark.parametrize("env", [{}, {"PUBLIC_BASE_URL": ""}, {"PUBLIC_BASE_URL": "  "}])
def test_without_public_base_url_links_follow_the_listen_address(env):
    settings = load_settings(env)
    assert not settings.public_base_url_set
    assert settings.listening_at("http://127.0.0.1:8097").public_base_url == "http://127.0.0.1:8097"


def test_public_base_url_wins_over_the_listen_address():
    settings = load_settings({"PUBLIC_BASE_URL": "https://links.example.com/"})
    assert settings.public_base_url_set
    assert settings.listening_at("http://127.0.0.1:8097").public_base_url == "https://links.example.com"


def test_a_listening_port_is_refused_and_a_free_one_is_left_free():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ListenError) as refused:
            check_listenable("127.0.0.1", port)
        assert str(refused.value) == (f"port {port} is already in use on 127.0.0.1:"
                                      " stop what listens there or choose another --port")
        # a wildcard address collides with it too
        with pytest.raises(ListenError, match=f"port {port} is already in use on 0.0.0.0"):
            check_listenable("0.0.0.0", port)
    check_listenable("127.0.0.1", port)  # closed now: free, and the check holds nothing
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))


@pytest.mark.parametrize(("host", "message"), [
    ("192.0.2.1", "cannot listen on 192.0.2.1:{port}: Cannot assign requested address"),
    ("no-such-host.invalid", "cannot listen on no-such-host.invalid:{port}: "),
])
def test_an_address_that_is_not_this_machines_is_one_line(host, message):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ListenError) as refused:
        check_listenable(host, port)
    assert str(refused.value).startswith(message.format(port=port)) and "\n" not in str(refused.value)


@pytest.mark.parametrize("raw", ["0", "65536", "-1", "http"])
def test_serve_takes_only_a_port_it_can_name_in_its_links(raw, capsys):
    from service.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["serve", "--port", raw])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"python -m service serve: error: argument --port: {raw!r} is not a port from 1 to 65535")
