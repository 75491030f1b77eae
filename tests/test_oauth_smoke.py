from tests.conftest import oauth_connect


def test_connect_shows_green_check(client, organizer, sandbox):
    response = oauth_connect(client, sandbox.url)
    assert response.status_code == 303
    page = client.get("/manage/integrations/").get_data(as_text=True)
    assert 'aria-label="Connected"' in page
    assert "Sandbox Festival Co." in page
